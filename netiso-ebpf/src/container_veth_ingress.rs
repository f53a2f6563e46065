//! Ingress of a container's host-side veth: packets the container sends.
//!
//! TCP and UDP must come from a port the container owns; the rest is dropped and
//! counted by reason. Accepted packets for the host's address or a loopback address
//! go to the container owning the destination port, or else into the host's loopback
//! (host services). Everything else leaves through the public interface, with the
//! host's FIB and neighbour table choosing the next hop, in the container's own flow
//! of the public interface's fq_codel when egress flows are unique.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_PIPE, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh},
    macros::classifier,
    programs::TcContext,
};
use netiso_common::{DatapathConfig, EchoKey, PortOwner};

use crate::{
    deliver::deliver_to,
    egress_flow::assign_container_flow,
    maps::{ECHO_OWNERS, VETH_CONTAINERS, config, count_container, port_owner},
    packet::{Flow, Fragment, Icmp, Parsed, icmp, is_icmpv6_link_control, parse, ports},
};

/// Why a container's packet was dropped; each reason has its own counter.
#[derive(Clone, Copy)]
enum DropReason {
    PortNotOwned,
    Malformed,
    Other,
}

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
    let Some(config) = config() else {
        return TC_ACT_SHOT;
    };
    let flow = match check(&ctx, slot) {
        Ok(flow) => flow,
        Err(reason) => {
            count_container(slot, |c| match reason {
                DropReason::PortNotOwned => c.tx_dropped_port_not_owned += 1,
                DropReason::Malformed => c.tx_dropped_malformed += 1,
                DropReason::Other => c.tx_dropped_other += 1,
            });
            return TC_ACT_SHOT;
        }
    };
    count_container(slot, |c| {
        c.tx_packets += 1;
        c.tx_bytes += u64::from(ctx.len());
    });
    if flow.is_for_host(config) || flow.is_for_loopback() {
        return to_local(&ctx, &flow, config);
    }
    if flow.is_icmp() {
        remember_echo(&ctx, &flow, PortOwner::new(slot, ifindex));
    }
    assign_container_flow(&ctx, slot);
    // SAFETY: helper call; a null params pointer means "look the next hop up".
    unsafe { bpf_redirect_neigh(config.public_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// Whether container `slot` may send this packet; the counter to bump if not.
#[inline(always)]
fn check(ctx: &TcContext, slot: u32) -> Result<Flow, DropReason> {
    let flow = match parse(ctx) {
        Parsed::Ip(flow) => flow,
        Parsed::NotIp => return Err(DropReason::Other),
        Parsed::Malformed => return Err(DropReason::Malformed),
    };
    if flow.has_ports() {
        if flow.fragment == Fragment::Later {
            // No ports to check; the first fragment of the datagram was checked.
            return Ok(flow);
        }
        let Some((sport, _)) = ports(ctx, &flow) else {
            return Err(DropReason::Malformed);
        };
        return match port_owner(sport).and_then(|o| o.slot()) {
            Some(owner) if owner == slot => Ok(flow),
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
        return Ok(flow);
    }
    Err(DropReason::Other)
}

/// A packet for the host's address or loopback: to the container owning the port, or
/// into the host's loopback, where host services receive it.
#[inline(always)]
fn to_local(ctx: &TcContext, flow: &Flow, config: &DatapathConfig) -> i32 {
    if flow.has_ports()
        && let Some((_, dport)) = ports(ctx, flow)
        && let Some(owner) = port_owner(dport)
        && let Some(verdict) = deliver_to(owner, ctx.len())
    {
        return verdict;
    }
    // SAFETY: helper call.
    unsafe { bpf_redirect(config.host_lo_ifindex, u64::from(BPF_F_INGRESS)) as i32 }
}

/// Records an outgoing echo request so that its replies reach this container.
#[inline(always)]
fn remember_echo(ctx: &TcContext, flow: &Flow, owner: PortOwner) {
    if let Some(Icmp::EchoRequest { id }) = icmp(ctx, flow) {
        let key = EchoKey {
            remote: flow.dst,
            id,
            ipv6: u8::from(flow.ipv6),
            _pad: 0,
        };
        // A full map evicts the least recently used conversation.
        let _ = ECHO_OWNERS.insert(key, owner, 0);
    }
}
