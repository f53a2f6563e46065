//! Ingress of the host's public interface: packets arriving from the network.
//! - TCP/UDP for the host's address to a port a container owns: to that container;
//!   a fragmented datagram's later fragments (no ports) follow its first
//!   (`INBOUND_FRAGMENTS`).
//! - ICMP echo replies to a container's echo request: to that container.
//! - ICMP errors quoting a packet a container sent: to that container.
//! - A published host port's packets get the container port on delivery
//!   (`translate.rs`).
//! - Everything else: to the host stack, unchanged.
//!
//! Only frames addressed to the host (`PACKET_HOST`) are steered. A packet for a
//! container whose source no remote host can have (the host's own address, loopback,
//! multicast, ...) is dropped and counted as the container's
//! `rx_dropped_spoofed_source`: it could make the container answer the host or
//! another container.
use aya_ebpf::{
    bindings::{TC_ACT_PIPE, TC_ACT_SHOT},
    programs::TcContext,
};
use netiso_common::{Direction, DropReason, PortOwner};

use crate::{
    datapath_log::{Program, logged_classifier},
    deliver::{Origin, PACKET_HOST, deliver_to},
    drop_events,
    echo::{checksum_offset, identifier_offset, reply_owner},
    icmp::{Icmp, Quoted, icmp},
    maps::{INBOUND_FRAGMENTS, config, count_container, count_public_iface, port_owner},
    packet::{Flow, Fragment, Parsed, classify, parse_received, parse_with_ports, ports},
    translate::{Destination, Write, container_port, quoted_port},
};

logged_classifier!(
    public_ingress,
    Program::PublicIngress,
    public_ingress_verdict
);

// A function of its own: its stack is not added to the logging's.
#[inline(never)]
fn public_ingress_verdict(ctx: &TcContext) -> i32 {
    // The common case (TCP or UDP, no options or extension headers, whole) in one
    // read; one parse serves the counters and the steering of other IP packets; the
    // rest (rare here) are read again to be counted.
    if let Some(frame) = parse_with_ports(ctx) {
        count_public_iface(Direction::Ingress, frame.flow.class(), ctx.len());
        return steer(ctx, &frame.flow, Some((frame.sport, frame.dport))).unwrap_or(TC_ACT_PIPE);
    }
    match parse_received(ctx) {
        Parsed::Ip(flow) => {
            count_public_iface(Direction::Ingress, flow.class(), ctx.len());
            steer(ctx, &flow, None).unwrap_or(TC_ACT_PIPE)
        }
        _ => {
            count_public_iface(Direction::Ingress, classify(ctx), ctx.len());
            TC_ACT_PIPE
        }
    }
}

/// The redirect verdict for a packet a container owns, `None` for the host's packets
/// (`read_ports`: its TCP or UDP ports, if read already).
#[inline(always)]
fn steer(ctx: &TcContext, flow: &Flow, read_ports: Option<(u16, u16)>) -> Option<i32> {
    // SAFETY: the context pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        return None;
    }
    let config = config()?;
    if !flow.is_for_host(config) {
        return None;
    }
    let fragment = flow.fragment_key(flow.src);
    let (owner, destination) = match flow.fragment {
        // SAFETY: copied at once. Unknown (its first fragment went to the host, or
        // has not arrived): to the host.
        Fragment::Later => (unsafe { INBOUND_FRAGMENTS.get(fragment) }.copied()?, None),
        _ if flow.has_ports() => {
            let (_, dport) = match read_ports {
                Some(read) => read,
                None => ports(ctx, flow)?,
            };
            let owner = port_owner(dport);
            if flow.fragment == Fragment::First && owner.is_none() {
                // An identification reused for the host: later fragments are its.
                let _ = INBOUND_FRAGMENTS.remove(fragment);
            }
            (owner?, Some(Destination::of(flow, dport, Write::InPlace)))
        }
        Fragment::Whole if flow.is_icmp() => (icmp_owner(ctx, flow)?, None),
        _ => return None,
    };
    if flow.has_impossible_source(config) {
        if let Some(slot) = owner.slot() {
            drop_events::report(ctx, slot, Direction::Ingress, DropReason::SpoofedSource);
            count_container(slot, |c| c.rx_dropped_spoofed_source += 1);
        }
        return Some(TC_ACT_SHOT);
    }
    if flow.fragment == Fragment::First {
        let _ = INBOUND_FRAGMENTS.insert(fragment, owner, 0);
    }
    deliver_to(ctx, owner, config, Origin::Outside, destination)
}

/// The container an ICMP message is for: the one whose echo request it answers, or
/// whose packet an error quotes. Echo identifiers the datapath translated are put back.
#[inline(always)]
fn icmp_owner(ctx: &TcContext, flow: &Flow) -> Option<PortOwner> {
    let checksum = checksum_offset(flow.l4_offset);
    match icmp(ctx, flow)? {
        Icmp::EchoReply { id } => reply_owner(
            ctx,
            flow.src,
            flow.ipv6,
            id,
            identifier_offset(flow.l4_offset),
            checksum,
        ),
        Icmp::Error { inner } => match inner {
            // The quoted packet must be one the host's address sent; if it left a
            // container port as a published host port, the container gets it back
            // as it sent it.
            Quoted::Ports {
                src,
                sport,
                l4_offset,
                ..
            } if src == flow.dst => {
                let owner = port_owner(sport)?;
                if let Some(port) = container_port(sport) {
                    quoted_port(ctx, flow.l4_offset, l4_offset, sport, port).ok()?;
                }
                Some(owner)
            }
            Quoted::Echo { dst, id, id_offset } => {
                reply_owner(ctx, dst, flow.ipv6, id, id_offset, checksum)
            }
            _ => None,
        },
        Icmp::EchoRequest | Icmp::Other => None,
    }
}
