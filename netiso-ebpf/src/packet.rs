//! Reading packet headers. Reads go through `bpf_skb_load_bytes`, which also works on
//! non-linear skbs, and a read past the end of the packet is an error, never garbage.
use aya_ebpf::programs::TcContext;
use netiso_common::TrafficClass;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// Offset of the protocol field in an IPv4 header.
const IPV4_PROTOCOL_OFFSET: usize = 9;
/// Offset of the next-header field in an IPv6 header.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// Classifies a frame by its EtherType and, for IP, the protocol of the first header.
/// Frames too short to read are `Other`.
#[inline(always)]
pub fn classify(ctx: &TcContext) -> TrafficClass {
    let Ok(ethertype) = ctx.load::<u16>(12).map(u16::from_be) else {
        return TrafficClass::Other;
    };
    match ethertype {
        ETH_P_IP => match ctx.load::<u8>(ETH_HLEN + IPV4_PROTOCOL_OFFSET) {
            Ok(IPPROTO_TCP) => TrafficClass::Ipv4Tcp,
            Ok(IPPROTO_UDP) => TrafficClass::Ipv4Udp,
            Ok(IPPROTO_ICMP) => TrafficClass::Ipv4Icmp,
            Ok(_) => TrafficClass::Ipv4Other,
            Err(_) => TrafficClass::Other,
        },
        ETH_P_IPV6 => match ctx.load::<u8>(ETH_HLEN + IPV6_NEXT_HEADER_OFFSET) {
            Ok(IPPROTO_TCP) => TrafficClass::Ipv6Tcp,
            Ok(IPPROTO_UDP) => TrafficClass::Ipv6Udp,
            Ok(IPPROTO_ICMPV6) => TrafficClass::Ipv6Icmp,
            Ok(_) => TrafficClass::Ipv6Other,
            Err(_) => TrafficClass::Other,
        },
        ETH_P_ARP => TrafficClass::Arp,
        _ => TrafficClass::Other,
    }
}

/// IPv6 extension headers that are walked to find the transport header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Most extension headers walked; packets with more are not steered.
const MAX_IPV6_EXT_HEADERS: usize = 6;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: no transport header.
    Later,
}

/// The parts of an IP packet the datapath decides on.
#[derive(Clone, Copy)]
pub struct Flow {
    pub ipv6: bool,
    /// Transport protocol, after IPv6 extension headers.
    pub protocol: u8,
    pub l4_offset: usize,
    pub fragment: Fragment,
    /// Destination address; an IPv4 address fills the first 4 bytes.
    pub dst: [u8; 16],
}

impl Flow {
    pub fn has_ports(&self) -> bool {
        self.protocol == IPPROTO_TCP || self.protocol == IPPROTO_UDP
    }

    pub fn is_icmp(&self) -> bool {
        (!self.ipv6 && self.protocol == IPPROTO_ICMP)
            || (self.ipv6 && self.protocol == IPPROTO_ICMPV6)
    }
}

/// The result of parsing a frame.
pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP, VLAN-tagged, anything else).
    NotIp,
    /// An IP EtherType whose header is truncated or invalid.
    Malformed,
    Ip(Flow),
}

/// Parses the Ethernet and IP headers, walking IPv6 extension headers.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    let Ok(ethertype) = ctx.load::<u16>(12).map(u16::from_be) else {
        return Parsed::Malformed;
    };
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx),
        ETH_P_IPV6 => parse_ipv6(ctx),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext) -> Parsed {
    let Ok(version_ihl) = ctx.load::<u8>(ETH_HLEN) else {
        return Parsed::Malformed;
    };
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let (Ok(frag), Ok(protocol), Ok(dst)) = (
        ctx.load::<u16>(ETH_HLEN + 6).map(u16::from_be),
        ctx.load::<u8>(ETH_HLEN + IPV4_PROTOCOL_OFFSET),
        ctx.load::<[u8; 4]>(ETH_HLEN + 16),
    ) else {
        return Parsed::Malformed;
    };
    // Options included: the transport header starts after IHL words (Mesos required
    // IHL == 5 and left packets with options to the host).
    let l4_offset = ETH_HLEN + ihl;
    if (ctx.len() as usize) < l4_offset {
        return Parsed::Malformed;
    }
    let fragment = if frag & 0x1fff != 0 {
        Fragment::Later
    } else if frag & 0x2000 != 0 {
        Fragment::First
    } else {
        Fragment::Whole
    };
    let mut dst16 = [0u8; 16];
    dst16[..4].copy_from_slice(&dst);
    Parsed::Ip(Flow {
        ipv6: false,
        protocol,
        l4_offset,
        fragment,
        dst: dst16,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext) -> Parsed {
    let (Ok(version), Ok(first_next), Ok(dst)) = (
        ctx.load::<u8>(ETH_HLEN),
        ctx.load::<u8>(ETH_HLEN + IPV6_NEXT_HEADER_OFFSET),
        ctx.load::<[u8; 16]>(ETH_HLEN + 24),
    ) else {
        return Parsed::Malformed;
    };
    if version >> 4 != 6 {
        return Parsed::Malformed;
    }
    let mut next = first_next;
    let mut offset = ETH_HLEN + 40;
    let mut fragment = Fragment::Whole;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => {}
            _ => break,
        }
        let (Ok(following), Ok(len)) = (ctx.load::<u8>(offset), ctx.load::<u8>(offset + 1)) else {
            return Parsed::Malformed;
        };
        let header_len = match next {
            IPV6_FRAGMENT => {
                let Ok(frag) = ctx.load::<u16>(offset + 2).map(u16::from_be) else {
                    return Parsed::Malformed;
                };
                fragment = if frag & 0xfff8 != 0 {
                    Fragment::Later
                } else if frag & 1 != 0 {
                    Fragment::First
                } else {
                    Fragment::Whole
                };
                8
            }
            IPV6_AUTH => (usize::from(len) + 2) * 4,
            _ => (usize::from(len) + 1) * 8,
        };
        next = following;
        offset += header_len;
    }
    Parsed::Ip(Flow {
        ipv6: true,
        protocol: next,
        l4_offset: offset,
        fragment,
        dst,
    })
}

/// Source and destination ports of a TCP or UDP flow, or `None` when the transport
/// header is not all there (truncated packets are never steered by port).
#[inline(always)]
pub fn ports(ctx: &TcContext, flow: &Flow) -> Option<(u16, u16)> {
    let min_len = if flow.protocol == IPPROTO_TCP {
        TCP_MIN_HLEN
    } else {
        UDP_HLEN
    };
    if (ctx.len() as usize) < flow.l4_offset + min_len {
        return None;
    }
    let sport = ctx.load::<u16>(flow.l4_offset).ok()?;
    let dport = ctx.load::<u16>(flow.l4_offset + 2).ok()?;
    Some((u16::from_be(sport), u16::from_be(dport)))
}

/// ICMPv6 types a container never needs to send: it has no neighbours to discover
/// (router/neighbour solicitations and advertisements, redirects) and no multicast
/// listeners to report.
#[inline(always)]
pub fn is_icmpv6_link_control(icmp_type: u8) -> bool {
    matches!(icmp_type, 130..=137 | 143)
}
