//! Egress of a container's lo: the container talking to its own addresses (the
//! host's, 127.0.0.1, ::1). Traffic to ports the container owns stays inside; traffic
//! to any other port is sent out through eth0, where the host side delivers it to
//! the port's owner, another container or the host, as Mesos did.
//!
//! Every namespace's lo looks the same, so the program must be told whose it is. On
//! kernels whose tc programs may read a namespace's cookie (6.15+), one program
//! serves all containers: the helper gives the namespace of the packet's socket (of
//! the init namespace without one), so it runs where packets still have their
//! sender's socket, on lo's egress (loopback orphans them before its ingress), and
//! looks the cookie up in `CONTAINER_NETNS`. Before 6.15, each container gets a copy
//! of its own with its slot set as a load-time constant, which finds its eth0 in
//! `CONTAINER_ETH0_INDEXES` (an object load per container: what the shared one saves).
//!
//! A container's connection to its own published host port (127.0.0.1:31080, whose
//! server listens on 80 inside) never leaves its loopback, so it is translated here:
//! the request's destination becomes the container port, and the conversation is
//! remembered (`LOOPBACK_TRANSLATIONS`, by client port) so that the replies' source
//! becomes the host port again. Connections straight to the container port are not
//! remembered, and their first packet forgets a stale entry of the same client port.
use aya_ebpf::{
    EbpfContext as _,
    bindings::TC_ACT_PIPE,
    helpers::{bpf_get_netns_cookie, bpf_redirect},
    programs::TcContext,
};

use netiso_common::LoopbackFlow;

use crate::{
    datapath_log::{Program, logged_classifier},
    maps::{CONTAINER_ETH0_INDEXES, CONTAINER_NETNS, LOOPBACK_TRANSLATIONS, port_owner},
    packet::{Flow, HookKind, flow_with_ports},
    translate::{self, Write, container_port, host_port},
};

/// The copy's container slot.
#[unsafe(no_mangle)]
static CONTAINER_SLOT: u32 = 0;

logged_classifier!(
    container_lo_egress,
    Program::ContainerLoEgress,
    container_lo_egress_verdict
);

// A function of its own: its stack is not added to the logging's.
#[inline(never)]
fn container_lo_egress_verdict(ctx: &TcContext) -> i32 {
    // SAFETY: helper call on the program's own context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: a plain-data value, read once.
    match unsafe { CONTAINER_NETNS.get(cookie) } {
        Some(container) => steer(ctx, container.slot, container.eth0_ifindex),
        // Not a container's namespace (any more), or a packet without a socket: leave
        // it on lo.
        None => TC_ACT_PIPE,
    }
}

logged_classifier!(
    container_lo_egress_copy,
    Program::ContainerLoEgress,
    container_lo_egress_copy_verdict
);

// A function of its own: its stack is not added to the logging's.
#[inline(never)]
fn container_lo_egress_copy_verdict(ctx: &TcContext) -> i32 {
    // SAFETY: read_volatile keeps the compiler from folding the load-time constant.
    let slot = unsafe { core::ptr::read_volatile(&CONTAINER_SLOT) };
    match CONTAINER_ETH0_INDEXES.get(slot).copied() {
        Some(eth0) if eth0 != 0 => steer(ctx, slot, eth0),
        _ => TC_ACT_PIPE,
    }
}

/// Keeps the packet on lo if container `slot` owns its destination port, or sends it
/// out through eth0 (`eth0`) for the host side to deliver.
#[inline(always)]
fn steer(ctx: &TcContext, slot: u32, eth0: u32) -> i32 {
    let Some((flow, sport, dport)) = flow_with_ports(ctx, HookKind::Transmit) else {
        // ICMP to its own addresses is answered by the container itself.
        return TC_ACT_PIPE;
    };
    if port_owner(dport).and_then(|o| o.slot()) == Some(slot) {
        // Its own port: stays inside, translated if it is a published host port (or
        // a reply of a conversation that asked for one).
        translate_own_conversation(ctx, &flow, slot, sport, dport);
        return TC_ACT_PIPE;
    }
    if host_port(slot, dport).is_some() {
        // Straight to a port inside it that it publishes on a host port (the
        // datapath translates the host port on the way in from elsewhere).
        let _ = LOOPBACK_TRANSLATIONS.remove(loopback_flow(&flow, slot, sport, dport));
        return TC_ACT_PIPE;
    }
    // SAFETY: helper call; out through eth0's egress to the host-side veth.
    unsafe { bpf_redirect(eth0, 0) as i32 }
}

/// A conversation of container `slot` with itself: a request for a published host
/// port `dport` goes to its container port, remembered; a reply from a container
/// port to a client that asked for the host port leaves from the host port.
#[inline(always)]
fn translate_own_conversation(ctx: &TcContext, flow: &Flow, slot: u32, sport: u16, dport: u16) {
    if let Some(inside) = container_port(dport) {
        let key = loopback_flow(flow, slot, sport, inside);
        // A full table forgets the least recently used conversation.
        let _ = LOOPBACK_TRANSLATIONS.insert(key, dport, 0);
        let _ = translate::destination(ctx, flow, dport, inside);
        return;
    }
    // SAFETY: copied at once.
    let asked =
        unsafe { LOOPBACK_TRANSLATIONS.get(loopback_flow(flow, slot, dport, sport)) }.copied();
    if let Some(host_port) = asked {
        let _ = translate::from_container(ctx, flow, (sport, host_port), Write::Helper);
    }
}

#[inline(always)]
fn loopback_flow(flow: &Flow, slot: u32, client_port: u16, container_port: u16) -> LoopbackFlow {
    LoopbackFlow {
        slot,
        client_port,
        container_port,
        protocol: flow.protocol,
        _pad: [0; 3],
    }
}
