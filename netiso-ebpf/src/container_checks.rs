//! What a container may send: checks on every packet leaving it, before it is routed.
//! A container shares the host's addresses and MAC, so what it sends must carry them;
//! it is an end host, so it sends no multicast, no link-local traffic, no neighbour
//! discovery, and of ICMP only echo requests and errors about its own traffic.
use aya_ebpf::programs::TcContext;
use netiso_common::{DatapathConfig, DropReason};

use crate::{
    icmp::{
        ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, ICMP_PARAMETER_PROBLEM,
        ICMP_TIME_EXCEEDED, ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REQUEST, ICMPV6_PARAMETER_PROBLEM,
        ICMPV6_TIME_EXCEEDED, Quoted, icmp_type_code, quoted,
    },
    maps::port_owner,
    packet::{Flow, is_host_address},
    translate::host_port,
};

/// The source MAC and address must be the container's own (the host's). Traffic
/// that stays on the host (to the host's address or loopback) may also come from the
/// container's lo, whose frames have no MAC and may have a loopback source.
#[inline(always)]
pub fn check_source(
    ctx: &TcContext,
    flow: &Flow,
    local: bool,
    config: &DatapathConfig,
) -> Result<(), DropReason> {
    let Ok(mac) = ctx.load::<[u8; 6]>(6) else {
        return Err(DropReason::Malformed);
    };
    let mac_ok = mac == config.host_mac || (local && mac == [0; 6]);
    let address_ok = flow.is_from_host(config) || (local && flow.is_from_loopback());
    if mac_ok && address_ok {
        Ok(())
    } else {
        Err(DropReason::Spoofed)
    }
}

/// The source port of TCP and UDP must be one the container owns.
#[inline(always)]
pub fn check_source_port(sport: u16, slot: u32) -> Result<(), DropReason> {
    match port_owner(sport).and_then(|o| o.slot()) {
        Some(owner) if owner == slot => Ok(()),
        _ => Err(DropReason::PortNotOwned),
    }
}

/// A port quoted in an ICMP error that must be translated before the error leaves.
pub struct QuotedTranslation {
    pub offset: usize,
    pub from: u16,
    pub to: u16,
}

/// Echo requests, and errors (destination unreachable but "fragmentation needed",
/// time exceeded, parameter problem) that quote a packet the container received: one
/// sent to the host's address at a port the container owns (or at a container port
/// it publishes on a host port: the quote then gets the host port). Everything else
/// is refused: redirects would change the host's routes for every container, and
/// "packet too big" would lower the path MTU the network keeps for the shared address.
#[inline(always)]
pub fn check_icmp(
    ctx: &TcContext,
    flow: &Flow,
    slot: u32,
    config: &DatapathConfig,
) -> Result<Option<QuotedTranslation>, DropReason> {
    let Some((icmp_type, code)) = icmp_type_code(ctx, flow) else {
        return Err(DropReason::Malformed);
    };
    let (echo_request, is_error) = if flow.ipv6 {
        (
            icmp_type == ICMPV6_ECHO_REQUEST,
            matches!(
                icmp_type,
                ICMPV6_DEST_UNREACH | ICMPV6_TIME_EXCEEDED | ICMPV6_PARAMETER_PROBLEM
            ),
        )
    } else {
        (
            icmp_type == ICMP_ECHO_REQUEST,
            (icmp_type == ICMP_DEST_UNREACH && code != ICMP_FRAG_NEEDED)
                || icmp_type == ICMP_TIME_EXCEEDED
                || icmp_type == ICMP_PARAMETER_PROBLEM,
        )
    };
    if echo_request {
        return Ok(None);
    }
    if !is_error {
        return Err(DropReason::Icmp);
    }
    match quoted(ctx, flow.ipv6, flow.l4_offset + 8) {
        Quoted::Ports {
            dst,
            dport,
            l4_offset,
            ..
        } if is_host_address(&dst, flow.ipv6, config) => {
            if port_owner(dport).and_then(|o| o.slot()) == Some(slot) {
                return Ok(None);
            }
            let to = host_port(slot, dport).ok_or(DropReason::Icmp)?;
            Ok(Some(QuotedTranslation {
                offset: l4_offset + 2,
                from: dport,
                to,
            }))
        }
        _ => Err(DropReason::Icmp),
    }
}
