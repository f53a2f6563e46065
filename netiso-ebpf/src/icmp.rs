//! Reading ICMP and ICMPv6 messages: their type, echo identifiers, and the packet an
//! error quotes (whose ports name the socket, and so the container, it concerns).
use aya_ebpf::programs::TcContext;

use crate::packet::{Flow, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, widen};

/// ICMPv6 types a container never needs to send: it has no neighbours to discover
/// (router/neighbour solicitations and advertisements, redirects) and no multicast
/// listeners to report.
#[inline(always)]
pub fn is_icmpv6_link_control(icmp_type: u8) -> bool {
    matches!(icmp_type, 130..=137 | 143)
}

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Code of `ICMP_DEST_UNREACH`: fragmentation needed (path MTU discovery).
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// What an ICMP or ICMPv6 message is, as far as steering goes.
pub enum Icmp {
    EchoRequest,
    EchoReply {
        id: u16,
    },
    /// An error quoting a packet we sent, of which `inner` describes the transport.
    Error {
        inner: Quoted,
    },
    Other,
}

/// The transport of the packet quoted in an ICMP error: the original packet left this
/// host, so its source port names the socket, and so the container, it came from.
pub enum Quoted {
    Ports {
        src: [u8; 16],
        dst: [u8; 16],
        sport: u16,
        dport: u16,
        /// Where the quoted transport header starts in the packet.
        l4_offset: usize,
    },
    /// An echo request; `id` as on the wire, `id_offset` where it sits in the packet.
    Echo {
        dst: [u8; 16],
        id: u16,
        id_offset: usize,
    },
    Unknown,
}

/// Reads the ICMP message of `flow` (whose protocol is ICMP or ICMPv6).
#[inline(always)]
pub fn icmp(ctx: &TcContext, flow: &Flow) -> Option<Icmp> {
    let icmp_type = ctx.load::<u8>(flow.l4_offset).ok()?;
    let id = || ctx.load::<u16>(flow.l4_offset + 4).ok();
    let (request, reply, is_error) = if flow.ipv6 {
        (
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
            matches!(
                icmp_type,
                ICMPV6_DEST_UNREACH
                    | ICMPV6_PACKET_TOO_BIG
                    | ICMPV6_TIME_EXCEEDED
                    | ICMPV6_PARAMETER_PROBLEM
            ),
        )
    } else {
        (
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
            matches!(
                icmp_type,
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
            ),
        )
    };
    Some(if icmp_type == request {
        // The identifier must be there to be made the container's.
        id()?;
        Icmp::EchoRequest
    } else if icmp_type == reply {
        Icmp::EchoReply { id: id()? }
    } else if is_error {
        Icmp::Error {
            inner: quoted(ctx, flow.ipv6, flow.l4_offset + 8),
        }
    } else {
        Icmp::Other
    })
}

/// The type and code of the ICMP message of `flow`.
#[inline(always)]
pub fn icmp_type_code(ctx: &TcContext, flow: &Flow) -> Option<(u8, u8)> {
    let icmp_type = ctx.load::<u8>(flow.l4_offset).ok()?;
    let code = ctx.load::<u8>(flow.l4_offset + 1).ok()?;
    Some((icmp_type, code))
}

/// Parses the original packet quoted at `offset` in an ICMP error.
#[inline(always)]
pub fn quoted(ctx: &TcContext, ipv6: bool, offset: usize) -> Quoted {
    let parsed = if ipv6 {
        (
            ctx.load::<u8>(offset + 6),
            ctx.load::<[u8; 16]>(offset + 8),
            ctx.load::<[u8; 16]>(offset + 24),
            Ok(40),
        )
    } else {
        (
            ctx.load::<u8>(offset + 9),
            ctx.load::<[u8; 4]>(offset + 12).map(widen),
            ctx.load::<[u8; 4]>(offset + 16).map(widen),
            ctx.load::<u8>(offset).map(|v| usize::from(v & 0x0f) * 4),
        )
    };
    let (Ok(protocol), Ok(src), Ok(dst), Ok(header_len)) = parsed else {
        return Quoted::Unknown;
    };
    let l4 = offset + header_len;
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => match (ctx.load::<u16>(l4), ctx.load::<u16>(l4 + 2)) {
            (Ok(sport), Ok(dport)) => Quoted::Ports {
                src,
                dst,
                sport: u16::from_be(sport),
                dport: u16::from_be(dport),
                l4_offset: l4,
            },
            _ => Quoted::Unknown,
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => match ctx.load::<u16>(l4 + 4) {
            Ok(id) => Quoted::Echo {
                dst,
                id,
                id_offset: l4 + 4,
            },
            Err(_) => Quoted::Unknown,
        },
        _ => Quoted::Unknown,
    }
}
