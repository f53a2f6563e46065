//! Ingress of a container's host-side veth: packets the container sends. TCP and UDP
//! must come from a port the container owns; the rest is dropped and counted by reason.
//! Accepted packets leave through the public interface, with the host's FIB and
//! neighbour table choosing the next hop.
use crate::{
    maps::{VETH_CONTAINERS, config, count_container, port_owner},
    packet::{Fragment, Parsed, is_icmpv6_link_control, parse, ports},
};
use aya_ebpf::{
    bindings::{TC_ACT_PIPE, TC_ACT_SHOT},
    helpers::bpf_redirect_neigh,
    macros::classifier,
    programs::TcContext,
};

#[classifier]
pub fn container_veth_ingress(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is copied at once; a concurrent update only changes which
    // container the packet is charged to.
    let Some(slot) = (unsafe { VETH_CONTAINERS.get(ifindex) }).copied() else {
        // Not a container veth the agent knows: leave it alone.
        return TC_ACT_PIPE;
    };
    let bytes = u64::from(ctx.len());
    match check(&ctx, slot) {
        Err(reason) => {
            count_container(slot, |c| match reason {
                DropReason::PortNotOwned => c.tx_dropped_port_not_owned += 1,
                DropReason::Malformed => c.tx_dropped_malformed += 1,
                DropReason::Other => c.tx_dropped_other += 1,
            });
            TC_ACT_SHOT
        }
        Ok(()) => {
            count_container(slot, |c| {
                c.tx_packets += 1;
                c.tx_bytes += bytes;
            });
            let Some(config) = config() else {
                return TC_ACT_SHOT;
            };
            unsafe { bpf_redirect_neigh(config.public_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
        }
    }
}

/// Why a container's packet was dropped; each reason has its own counter.
#[derive(Clone, Copy)]
enum DropReason {
    PortNotOwned,
    Malformed,
    Other,
}

/// Whether container `slot` may send this packet; the counter to bump if not.
#[inline(always)]
fn check(ctx: &TcContext, slot: u32) -> Result<(), DropReason> {
    let flow = match parse(ctx) {
        Parsed::Ip(flow) => flow,
        Parsed::NotIp => return Err(DropReason::Other),
        Parsed::Malformed => return Err(DropReason::Malformed),
    };
    if flow.has_ports() {
        if flow.fragment == Fragment::Later {
            // No ports to check; the first fragment of the datagram was checked.
            return Ok(());
        }
        let Some((sport, _)) = ports(ctx, &flow) else {
            return Err(DropReason::Malformed);
        };
        return match port_owner(sport).and_then(|o| o.slot()) {
            Some(owner) if owner == slot => Ok(()),
            _ => Err(DropReason::PortNotOwned),
        };
    }
    if flow.is_icmp() {
        if flow.ipv6 {
            let Ok(icmp_type) = ctx.load::<u8>(flow.l4_offset) else {
                return Err(DropReason::Malformed);
            };
            if is_icmpv6_link_control(icmp_type) {
                return Err(DropReason::Other);
            }
        }
        return Ok(());
    }
    Err(DropReason::Other)
}
