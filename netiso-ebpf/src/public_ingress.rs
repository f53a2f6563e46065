//! Ingress of the host's public interface: packets arriving from the network.
//! - TCP/UDP for the host's address to a port a container owns: to that container.
//! - ICMP echo replies to a container's echo request: to that container.
//! - ICMP errors quoting a packet a container sent: to that container.
//! - Everything else: to the host stack, unchanged.
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use netiso_common::{Direction, EchoKey};

use crate::{
    deliver::deliver_to,
    maps::{ECHO_OWNERS, config, count_public_iface, port_owner},
    packet::{Flow, Fragment, Icmp, Parsed, Quoted, classify, icmp, parse, ports},
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
    if flow.fragment != Fragment::Whole || !flow.is_for_host(config()?) {
        return None;
    }
    if flow.has_ports() {
        let (_, dport) = ports(ctx, &flow)?;
        return deliver_to(port_owner(dport)?, ctx.len());
    }
    if flow.is_icmp() {
        return steer_icmp(ctx, &flow);
    }
    None
}

#[inline(always)]
fn steer_icmp(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    let owner = match icmp(ctx, flow)? {
        Icmp::EchoReply { id } => echo_owner(flow.src, id, flow.ipv6)?,
        Icmp::Error { inner } => match inner {
            // The quoted packet must be one the host's address sent.
            Quoted::Ports { src, sport } if src == flow.dst => port_owner(sport)?,
            Quoted::Echo { dst, id } => echo_owner(dst, id, flow.ipv6)?,
            _ => return None,
        },
        Icmp::EchoRequest { .. } | Icmp::Other => return None,
    };
    deliver_to(owner, ctx.len())
}

#[inline(always)]
fn echo_owner(remote: [u8; 16], id: u16, ipv6: bool) -> Option<netiso_common::PortOwner> {
    let key = EchoKey {
        remote,
        id,
        ipv6: u8::from(ipv6),
        _pad: 0,
    };
    // SAFETY: copied at once.
    unsafe { ECHO_OWNERS.get(key) }.copied()
}
