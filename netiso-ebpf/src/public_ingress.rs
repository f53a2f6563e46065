//! Ingress of the host's public interface: packets arriving from the network. TCP and
//! UDP packets for the host's address whose destination port a container owns go
//! straight to that container; everything else goes to the host stack unchanged.
use aya_ebpf::{
    bindings::TC_ACT_PIPE, helpers::bpf_redirect_peer, macros::classifier, programs::TcContext,
};
use netiso_common::Direction;

use crate::{
    maps::{config, count_container, count_public_iface, port_owner},
    packet::{Fragment, Parsed, classify, parse, ports},
};

#[classifier]
pub fn public_ingress(ctx: TcContext) -> i32 {
    count_public_iface(Direction::Ingress, classify(&ctx), ctx.len());
    steer(&ctx).unwrap_or(TC_ACT_PIPE)
}

/// The redirect verdict for a packet a container owns, `None` for the host's packets.
#[inline(always)]
fn steer(ctx: &TcContext) -> Option<i32> {
    let Parsed::Ip(flow) = parse(ctx) else {
        return None;
    };
    // Fragments go to the host: only the first carries ports, so they could not all
    // reach the same container.
    if !flow.has_ports() || flow.fragment != Fragment::Whole {
        return None;
    }
    let config = config()?;
    let for_host = if flow.ipv6 {
        config.has_ipv6 != 0 && flow.dst == config.host_ipv6
    } else {
        config.has_ipv4 != 0 && flow.dst[..4] == config.host_ipv4
    };
    if !for_host {
        return None;
    }
    let (_, dport) = ports(ctx, &flow)?;
    let owner = port_owner(dport)?;
    let slot = owner.slot()?;
    count_container(slot, |c| {
        c.rx_packets += 1;
        c.rx_bytes += u64::from(ctx.len());
    });
    // Into the container's eth0 ingress without a second pass through the host stack.
    Some(unsafe { bpf_redirect_peer(owner.veth_ifindex, 0) } as i32)
}
