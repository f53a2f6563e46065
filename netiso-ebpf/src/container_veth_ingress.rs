//! Packets a container sends: the ingress of its host-side veth, or, for a netkit
//! pair, the container end's transmit path (`container_netkit_peer`), where the
//! packet is steered before it crosses into the host: no backlog hop.
//!
//! Each packet is checked first (`container_checks.rs`: the container's own source
//! address and MAC, a port it owns, no multicast or link-local destination, only the
//! ICMP an end host sends); refused packets are dropped and counted by reason. An
//! accepted packet for the host's address or a loopback address goes to the container
//! owning the destination port, or else into the host's loopback (host services).
//! Everything else leaves through the public interface, with the host's FIB and
//! neighbour table choosing the next hop, in the container's own flow of the public
//! interface's fq_codel when egress flows are unique.
//!
//! Later fragments carry no ports, so they follow their datagram's first fragment:
//! where it went, and only if the same container sent it (`FRAGMENT_ROUTES`).
//!
//! The common case (TCP or UDP from a port the container owns, or from a container
//! port it publishes, to a remote address) is checked and sent first on one read of
//! the frame (`sends_to_network`); every other packet gets the checks in full
//! (`container_sends`).
use aya_ebpf::{
    bindings::{TC_ACT_PIPE, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh},
    macros::classifier,
    programs::TcContext,
};
use netiso_common::{
    CONTAINER_PACKET_MARK, DatapathConfig, Direction, DropReason, FRAGMENTS_TO_CONTAINER,
    FRAGMENTS_TO_HOST, FRAGMENTS_TO_NETWORK, FragmentKey, FragmentRoute, HOST_PORT_CLOSED,
    HostAddress, PortOwner,
};

use crate::{
    container_checks::{check_icmp, check_source, check_source_port},
    datapath_log::{self, Program, logged_classifier},
    deliver::{Origin, deliver_to, into_loopback},
    drop_events, echo,
    egress_flow::assign_container_flow,
    egress_policer,
    icmp::{Icmp, icmp, is_icmpv6_link_control},
    maps::{
        FRAGMENT_ROUTES, HOST_ADDRESSES, HOST_PORT_ACCESS, VETH_CONTAINERS, config,
        count_container, port_owner,
    },
    packet::{Flow, Fragment, Parsed, PortsFrame, parse, parse_received, parse_with_ports, ports},
    translate::{self, Destination, Write},
};

/// An Ethernet header's length: the MTU counts what follows it.
const ETHERNET_HEADER_LEN: u32 = 14;

/// The public interface's MTU, set when the agent loads the object (0: unchecked).
#[unsafe(no_mangle)]
static PUBLIC_MTU: u32 = 0;

/// Where an accepted packet goes.
#[derive(Clone, Copy)]
enum Route {
    Network,
    Host,
    /// To a container, with the TCP or UDP destination port to translate, if any.
    Container(PortOwner, Option<Destination>),
}

/// Where the program runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// The ingress of the host end of a veth pair.
    VethIngress,
    /// The transmit path of the container end of a netkit pair (`BPF_NETKIT_PEER`),
    /// where the packet's device is already the host end. `bpf_redirect_peer` works
    /// only at a tc ingress, so deliveries to containers go through their device.
    NetkitPeer,
}

logged_classifier!(
    container_veth_ingress,
    Program::ContainerVethIngress,
    container_sends_from_veth
);

#[inline(always)]
fn container_sends_from_veth(ctx: &TcContext) -> i32 {
    sends(ctx, Hook::VethIngress)
}

#[classifier]
pub fn container_netkit_peer(ctx: TcContext) -> i32 {
    let verdict = sends(&ctx, Hook::NetkitPeer);
    datapath_log::decision(&ctx, Program::ContainerNetkitPeer, verdict);
    if verdict == TC_ACT_SHOT {
        drop_after_sending()
    } else {
        verdict
    }
}

/// The common case first, then the full checks. (Two functions, called one after the
/// other: their stacks are not added together.)
#[inline(always)]
fn sends(ctx: &TcContext, hook: Hook) -> i32 {
    let verdict = sends_to_network(ctx, hook);
    if verdict != CHECK_IN_FULL {
        return verdict;
    }
    container_sends(ctx, hook)
}

/// What [`sends_to_network`] returns for a packet it leaves to [`container_sends`]
/// (no tc verdict is negative but `TC_ACT_UNSPEC`).
const CHECK_IN_FULL: i32 = i32::MIN;

/// The common case, TCP or UDP from a port the container owns (or a container port it
/// publishes, which leaves as its host port) to a remote address, checked on one read
/// of the frame and sent; [`CHECK_IN_FULL`] for everything else, then checked by
/// [`container_sends`]. Whatever it sends, [`decide`] would also send to the network,
/// translated alike, with nothing to record.
#[inline(never)]
fn sends_to_network(ctx: &TcContext, hook: Hook) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(sender) = sender_to_network(ctx, ifindex) else {
        return CHECK_IN_FULL;
    };
    let slot = sender.slot;
    if !egress_policer::conforms(slot, ctx.len()) {
        return refuse(ctx, slot, DropReason::RateLimit);
    }
    if let Some(host_port) = sender.host_port
        && translate::from_container(
            ctx,
            &sender.frame.flow,
            (sender.frame.sport, host_port),
            Write::InPlace,
        )
        .is_err()
    {
        return refuse(ctx, slot, DropReason::Malformed);
    }
    count_sent(ctx, slot);
    to_network(ctx, hook, sender.config, slot)
}

/// What [`sender_to_network`] found.
struct ShortPathSender {
    frame: PortsFrame,
    slot: u32,
    /// The host port the source port leaves as, if it is a published container port.
    host_port: Option<u16>,
    config: &'static DatapathConfig,
}

/// The sender and what it sent, if [`sends_to_network`] may send the packet.
#[inline(always)]
fn sender_to_network(ctx: &TcContext, ifindex: u32) -> Option<ShortPathSender> {
    let frame = parse_with_ports(ctx)?;
    let owner = port_owner(frame.sport);
    let (slot, host_port) = match owner {
        Some(owner) if owner.veth_ifindex == ifindex => (owner.slot()?, None),
        _ => {
            // SAFETY: copied at once.
            let slot = unsafe { VETH_CONTAINERS.get(ifindex) }.copied()?;
            // Its own port, named with another device: for the full checks.
            if owner.and_then(|o| o.slot()) == Some(slot) {
                return None;
            }
            (slot, Some(translate::host_port(slot, frame.sport)?))
        }
    };
    let config = config()?;
    let flow = &frame.flow;
    let to_network = frame.source_mac == config.host_mac
        && flow.is_from_host(config)
        && !flow.is_for_host(config)
        && !flow.is_for_loopback()
        && !flow.is_to_link_or_group()
        && !is_other_host_address(flow)
        && !too_long_for_the_network(ctx);
    to_network.then_some(ShortPathSender {
        frame,
        slot,
        host_port,
        config,
    })
}

// A function of its own: its stack is not added to the logging's.
#[inline(never)]
fn container_sends(ctx: &TcContext, hook: Hook) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Every field set on every path, whatever the frame: LLVM otherwise keeps a
    // non-IP frame's unset fields in registers that it spills, which the verifier
    // refuses.
    // The veth's host end received the frame (`parse_received`); a netkit peer's
    // program runs on the container's transmit path, whose sender set the protocol.
    let parsed = match hook {
        Hook::VethIngress => parse_received(ctx),
        Hook::NetkitPeer => parse(ctx),
    };
    let (flow, unparsed) = match parsed {
        Parsed::Ip(flow) => (flow, None),
        Parsed::NotIp => (Flow::NONE, Some(DropReason::Other)),
        Parsed::Malformed => (Flow::NONE, Some(DropReason::Malformed)),
    };
    // TCP and UDP ports, read once (later fragments carry none).
    let ports = if unparsed.is_none() && flow.has_ports() && flow.fragment != Fragment::Later {
        ports(ctx, &flow)
    } else {
        None
    };
    let Some(slot) = sender_slot(ifindex, ports) else {
        // Not a container device the agent knows: a veth is left alone; a netkit
        // pair without its container sends nothing.
        return match hook {
            Hook::VethIngress => TC_ACT_PIPE,
            Hook::NetkitPeer => TC_ACT_SHOT,
        };
    };
    let Some(config) = config() else {
        return TC_ACT_SHOT;
    };
    let sender = PortOwner::new(slot, ifindex);
    let decision = match unparsed {
        Some(reason) => Err(reason),
        None => decide(ctx, &flow, ports, sender, config),
    }
    .and_then(|route| {
        if egress_policer::conforms(slot, ctx.len()) {
            Ok(route)
        } else {
            Err(DropReason::RateLimit)
        }
    });
    let route = match decision {
        Ok(route) => route,
        Err(reason) => return refuse(ctx, slot, reason),
    };
    count_sent(ctx, slot);
    let origin = match hook {
        Hook::VethIngress => Origin::Outside,
        Hook::NetkitPeer => Origin::Transmit,
    };
    match route {
        Route::Container(owner, destination) => {
            if let Some(verdict) = deliver_to(ctx, owner, config, origin, destination) {
                return verdict;
            }
            into_loopback(ctx, config.host_lo_ifindex)
        }
        Route::Host => into_loopback(ctx, config.host_lo_ifindex),
        Route::Network => to_network(ctx, hook, config, slot),
    }
}

/// Drops a packet container `slot` sent, counted by `reason`.
#[inline(always)]
fn refuse(ctx: &TcContext, slot: u32, reason: DropReason) -> i32 {
    drop_events::report(ctx, slot, Direction::Egress, reason);
    count_container(slot, |c| match reason {
        DropReason::PortNotOwned => c.tx_dropped_port_not_owned += 1,
        DropReason::Malformed => c.tx_dropped_malformed += 1,
        DropReason::Other => c.tx_dropped_other += 1,
        DropReason::Spoofed => c.tx_dropped_spoofed += 1,
        DropReason::Fragment => c.tx_dropped_fragment += 1,
        DropReason::Icmp => c.tx_dropped_icmp += 1,
        DropReason::Multicast => c.tx_dropped_multicast += 1,
        DropReason::HostPort => c.tx_dropped_host_port += 1,
        DropReason::RateLimit => c.tx_dropped_rate_limit += 1,
        DropReason::SpoofedSource => c.rx_dropped_spoofed_source += 1,
    });
    TC_ACT_SHOT
}

/// Counts a packet container `slot` sent.
#[inline(always)]
fn count_sent(ctx: &TcContext, slot: u32) {
    count_container(slot, |c| {
        c.tx_packets += 1;
        c.tx_bytes += u64::from(ctx.len());
    });
}

/// Sends a packet container `slot` sent out of the public interface, the host's FIB
/// and neighbour table choosing the next hop, in the container's own egress flow.
#[inline(always)]
fn to_network(ctx: &TcContext, hook: Hook, config: &DatapathConfig, slot: u32) -> i32 {
    assign_container_flow(ctx, config, slot);
    if hook == Hook::NetkitPeer {
        // The public interface's egress program takes this for a container's
        // packet, not the host's (a veth's packets say so by the interface
        // they arrived on), and clears it.
        // SAFETY: the context pointer is valid for the program's run; tc
        // programs may write the mark. Volatile, so that LLVM does not merge
        // it with the priority's store into one through a computed context
        // pointer, which the verifier refuses.
        unsafe {
            core::ptr::write_volatile(&raw mut (*ctx.skb.skb).mark, CONTAINER_PACKET_MARK);
        }
    }
    // SAFETY: helper call; a null params pointer means "look the next hop up".
    unsafe { bpf_redirect_neigh(config.public_ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// Drops a packet on a netkit pair as a veth pair's host end does: after the
/// container's device has sent it. A drop verdict there would fail the container's
/// send (`ENOBUFS` to a raw socket, or to a socket asking for errors, as ping does)
/// and count it as its device's drop; a redirect to no device is counted as sent and
/// freed by the kernel, like a packet the host end of a veth drops. (A function of
/// its own: inlined, LLVM merged its path with another into code the verifier refuses,
/// a register read unset.)
#[inline(never)]
fn drop_after_sending() -> i32 {
    // SAFETY: helper call; ifindex 0 names no device, so the kernel frees the packet
    // when it carries out the redirect.
    unsafe { bpf_redirect(0, 0) as i32 }
}

/// The slot of the container whose device (the host end of its pair) is `ifindex`.
/// The common case costs an array read: a TCP or UDP packet from a port whose owner's
/// device is this one. Anything else is looked up in the table of devices.
#[inline(always)]
fn sender_slot(ifindex: u32, ports: Option<(u16, u16)>) -> Option<u32> {
    if let Some((sport, _)) = ports
        && let Some(owner) = port_owner(sport)
        && owner.veth_ifindex == ifindex
    {
        return owner.slot();
    }
    // SAFETY: the value is copied at once; a concurrent update only changes which
    // container the packet is charged to.
    unsafe { VETH_CONTAINERS.get(ifindex) }.copied()
}

/// Whether container `sender` may send this IP packet (`flow`, with `ports` if it is
/// TCP or UDP and not a later fragment), and where it goes; the counter to bump if it
/// may not. The checks run in order: the kernel's own link control, the source, the
/// destination's kind, then the transport (ports or ICMP), the route, and what the
/// route asks for (echo conversations, fragment routes).
#[inline(always)]
fn decide(
    ctx: &TcContext,
    flow: &Flow,
    ports: Option<(u16, u16)>,
    sender: PortOwner,
    config: &DatapathConfig,
) -> Result<Route, DropReason> {
    let slot = sender.slot().unwrap_or_default();
    refuse_link_control(ctx, flow)?;
    let local = flow.is_for_host(config) || flow.is_for_loopback();
    check_source(ctx, flow, local, config)?;
    if !local && flow.is_to_link_or_group() {
        return Err(DropReason::Multicast);
    }
    // The host's other addresses are the host's alone: only the shared one has
    // containers' ports.
    let host_only = !local && is_other_host_address(flow);
    let key = flow.fragment_key(flow.dst);
    if flow.fragment == Fragment::Later {
        return later_fragment_route(key, slot);
    }
    let dport = check_transport(ctx, flow, ports, slot, config)?;
    let route = if local {
        local_route(flow, dport)?
    } else if host_only {
        host_service(dport)?
    } else if too_long_for_the_network(ctx) {
        return Err(DropReason::Malformed);
    } else {
        Route::Network
    };
    if matches!(route, Route::Network)
        && flow.is_icmp()
        && matches!(icmp(ctx, flow), Some(Icmp::EchoRequest))
        && !echo::container_request(ctx, flow, sender, slot)
    {
        return Err(DropReason::Icmp);
    }
    if flow.fragment == Fragment::First {
        record_fragment_route(key, slot, route);
    }
    Ok(route)
}

/// Neighbour discovery and listener reports are refused as "other", before the
/// source is checked: a container's kernel sends them on its own, from the
/// unspecified address, and they are no spoofing.
#[inline(always)]
fn refuse_link_control(ctx: &TcContext, flow: &Flow) -> Result<(), DropReason> {
    if flow.ipv6 && flow.is_icmp() && flow.fragment != Fragment::Later {
        let Ok(icmp_type) = ctx.load::<u8>(flow.l4_offset) else {
            return Err(DropReason::Malformed);
        };
        if is_icmpv6_link_control(icmp_type) {
            return Err(DropReason::Other);
        }
    }
    Ok(())
}

/// A later fragment goes where its datagram's first fragment went, if the same
/// container sent that.
#[inline(always)]
fn later_fragment_route(key: FragmentKey, slot: u32) -> Result<Route, DropReason> {
    // SAFETY: copied at once.
    let recorded = unsafe { FRAGMENT_ROUTES.get(key) }.copied();
    match recorded {
        Some(route) if route.sender == slot + 1 => Ok(route_of(&route)),
        _ => Err(DropReason::Fragment),
    }
}

/// The transport's checks: a TCP or UDP source port the container owns (or a
/// container port it publishes, which then leaves as the host port), or ICMP an end
/// host sends (a quoted published port translated likewise). Returns the TCP or UDP
/// destination port, read once.
#[inline(always)]
fn check_transport(
    ctx: &TcContext,
    flow: &Flow,
    ports: Option<(u16, u16)>,
    slot: u32,
    config: &DatapathConfig,
) -> Result<Option<u16>, DropReason> {
    if flow.has_ports() {
        let Some((sport, dport)) = ports else {
            return Err(DropReason::Malformed);
        };
        if let Err(refused) = check_source_port(sport, slot) {
            let host_port = translate::host_port(slot, sport).ok_or(refused)?;
            translate::from_container(ctx, flow, (sport, host_port), Write::Helper)
                .map_err(|()| DropReason::Malformed)?;
        }
        Ok(Some(dport))
    } else if flow.is_icmp() {
        if let Some(quote) = check_icmp(ctx, flow, slot, config)? {
            translate::quoted_port(ctx, flow.l4_offset, quote.offset, quote.from, quote.to)
                .map_err(|()| DropReason::Malformed)?;
        }
        Ok(None)
    } else {
        Err(DropReason::Other)
    }
}

/// Remembers where a first fragment went, for the later ones (`later_fragment_route`).
#[inline(always)]
fn record_fragment_route(key: FragmentKey, slot: u32, route: Route) {
    let (destination, owner) = match route {
        Route::Network => (FRAGMENTS_TO_NETWORK, PortOwner::default()),
        Route::Host => (FRAGMENTS_TO_HOST, PortOwner::default()),
        Route::Container(owner, _) => (FRAGMENTS_TO_CONTAINER, owner),
    };
    let recorded = FragmentRoute {
        sender: slot + 1,
        destination,
        owner,
    };
    // A full map forgets the least recently used datagram.
    let _ = FRAGMENT_ROUTES.insert(key, recorded, 0);
}

/// Whether a packet is longer than the public interface carries. A container's pair
/// takes packets as long as its loopback's (between containers through the host's
/// address), and its route to the network keeps what its stack sends within the
/// public MTU; a raw socket could still write longer frames, or GSO packets of longer
/// segments.
#[inline(always)]
fn too_long_for_the_network(ctx: &TcContext) -> bool {
    // SAFETY: read_volatile keeps the compiler from folding the load-time constant.
    let mtu = unsafe { core::ptr::read_volatile(&PUBLIC_MTU) };
    // SAFETY: the context pointer is valid for the program's run.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    mtu != 0
        && if gso_size == 0 {
            ctx.len() > mtu + ETHERNET_HEADER_LEN
        } else {
            gso_size > mtu
        }
}

#[inline(always)]
fn route_of(recorded: &FragmentRoute) -> Route {
    match recorded.destination {
        // Later fragments carry no ports to translate.
        FRAGMENTS_TO_CONTAINER => Route::Container(recorded.owner, None),
        FRAGMENTS_TO_HOST => Route::Host,
        _ => Route::Network,
    }
}

/// A packet for the host's address or loopback: to the container owning its port
/// (`dport`, for TCP and UDP), or into the host's loopback, where host services
/// receive it, if containers may reach that port.
#[inline(always)]
fn local_route(flow: &Flow, dport: Option<u16>) -> Result<Route, DropReason> {
    if let Some(dport) = dport
        && let Some(owner) = port_owner(dport)
    {
        return Ok(Route::Container(
            owner,
            Some(Destination::of(flow, dport, Write::Helper)),
        ));
    }
    host_service(dport)
}

/// A packet for a host service: into the host's loopback, if containers may reach
/// its port.
#[inline(always)]
fn host_service(dport: Option<u16>) -> Result<Route, DropReason> {
    if let Some(dport) = dport
        && HOST_PORT_ACCESS.get(u32::from(dport)).copied() == Some(HOST_PORT_CLOSED)
    {
        return Err(DropReason::HostPort);
    }
    Ok(Route::Host)
}

/// Whether the destination is one of the host's addresses other than the shared one.
#[inline(always)]
fn is_other_host_address(flow: &Flow) -> bool {
    let key = HostAddress {
        address: flow.dst,
        ipv6: u8::from(flow.ipv6),
        _pad: [0; 3],
    };
    // SAFETY: only checked for presence.
    unsafe { HOST_ADDRESSES.get(key) }.is_some()
}
