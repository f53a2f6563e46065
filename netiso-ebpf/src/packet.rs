//! Reading packet headers. Reads go through `bpf_skb_load_bytes`, which also works on
//! non-linear skbs, and a read past the end of the packet is an error, never garbage;
//! the common case ([`parse_with_ports`]) and the few bytes that classify a frame or
//! rule out a loopback destination are read straight from the linear data when they
//! lie there. (The full parse stays with the helper: read in place, its IP header's
//! copy made the full outbound checks too deep for 5.10's verifier.)
use aya_ebpf::programs::TcContext;
use netiso_common::{DatapathConfig, FragmentKey, TrafficClass};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Offset of the protocol field in an IPv4 header.
const IPV4_PROTOCOL_OFFSET: usize = 9;
/// Offset of the destination address in an IPv4 header.
const IPV4_DESTINATION_OFFSET: usize = 16;
/// Offset of the destination address in an IPv6 header.
const IPV6_DESTINATION_OFFSET: usize = 24;
/// Offset of the next-header field in an IPv6 header.
const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// The frame's EtherType, or `None` if the frame is too short to have one. A frame
/// with a VLAN tag gets EtherType 0x8100 whether the tag is still in the frame or the
/// kernel has already moved it into the skb's metadata (it does before tc ingress):
/// tagged frames belong to another network and are never taken for untagged ones.
#[inline(always)]
fn ethertype(ctx: &TcContext) -> Option<u16> {
    // SAFETY: the context pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Some(ETH_P_8021Q);
    }
    ctx.load::<u16>(12).map(u16::from_be).ok()
}

/// [`ethertype`], read in place when the frame's start lies in the linear data. (Not
/// in [`parse`], which the full outbound checks inline: there, the direct read's
/// branch made LLVM leave a register unset on one path, which the verifier refuses.)
#[inline(always)]
fn ethertype_in_place(ctx: &TcContext) -> Option<u16> {
    // SAFETY: the context pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Some(ETH_P_8021Q);
    }
    read::<[u8; 2]>(ctx, 12).map(u16::from_be_bytes)
}

/// The EtherType of a frame a device received, as the kernel read it from the frame
/// (`eth_type_trans` sets `skb->protocol` on every receive, veth and loopback included,
/// and on test runs): no helper call. Only for receiving hooks: on a transmit path the
/// sender sets `skb->protocol`, and a raw socket may set it to anything (there,
/// [`parse_with_ports`] checks it against the frame). A tagged frame gets 0x8100, as
/// in [`ethertype`].
#[inline(always)]
fn received_ethertype(ctx: &TcContext) -> u16 {
    // SAFETY: the context pointer is valid for the program's run.
    let skb = unsafe { &*ctx.skb.skb };
    if skb.vlan_present != 0 {
        return ETH_P_8021Q;
    }
    // The field holds the big-endian 16-bit value.
    u16::from_be(skb.protocol as u16)
}

/// Classifies a frame by its EtherType and, for IP, the protocol of the first header.
/// Frames too short to read are `Other`.
#[inline(always)]
pub fn classify(ctx: &TcContext) -> TrafficClass {
    let Some(ethertype) = ethertype_in_place(ctx) else {
        return TrafficClass::Other;
    };
    match ethertype {
        ETH_P_IP => {
            read::<u8>(ctx, ETH_HLEN + IPV4_PROTOCOL_OFFSET).map_or(TrafficClass::Other, ipv4_class)
        }
        ETH_P_IPV6 => read::<u8>(ctx, ETH_HLEN + IPV6_NEXT_HEADER_OFFSET)
            .map_or(TrafficClass::Other, ipv6_class),
        ETH_P_ARP => TrafficClass::Arp,
        _ => TrafficClass::Other,
    }
}

#[inline(always)]
fn ipv4_class(protocol: u8) -> TrafficClass {
    match protocol {
        IPPROTO_TCP => TrafficClass::Ipv4Tcp,
        IPPROTO_UDP => TrafficClass::Ipv4Udp,
        IPPROTO_ICMP => TrafficClass::Ipv4Icmp,
        _ => TrafficClass::Ipv4Other,
    }
}

#[inline(always)]
fn ipv6_class(first_next: u8) -> TrafficClass {
    match first_next {
        IPPROTO_TCP => TrafficClass::Ipv6Tcp,
        IPPROTO_UDP => TrafficClass::Ipv6Udp,
        IPPROTO_ICMPV6 => TrafficClass::Ipv6Icmp,
        _ => TrafficClass::Ipv6Other,
    }
}

/// IPv6 extension headers that are walked to find the transport header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// Most extension headers walked; packets with more are not steered.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Whether `next` is an IPv6 extension header the datapath walks.
#[inline(always)]
pub fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
    )
}

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
    /// The protocol field of the IP header itself (IPv6: before extension headers),
    /// which traffic classes go by.
    pub first_protocol: u8,
    pub l4_offset: usize,
    pub fragment: Fragment,
    /// The identification shared by a datagram's fragments (IPv4's 16 bits, or the
    /// 32 bits of IPv6's fragment header; 0 for an IPv6 packet without one).
    pub fragment_id: u32,
    /// Addresses; an IPv4 address fills the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Flow {
    /// A flow of nothing, for frames that are not IP.
    pub const NONE: Flow = Flow {
        ipv6: false,
        protocol: 0,
        first_protocol: 0,
        l4_offset: 0,
        fragment: Fragment::Whole,
        fragment_id: 0,
        src: [0; 16],
        dst: [0; 16],
    };

    /// The traffic class [`classify`] gives the packet, without reading it again.
    #[inline(always)]
    pub fn class(&self) -> TrafficClass {
        if self.ipv6 {
            ipv6_class(self.first_protocol)
        } else {
            ipv4_class(self.first_protocol)
        }
    }

    /// The key of the (possibly) fragmented datagram this packet belongs to, whose
    /// other end is `peer`.
    #[inline(always)]
    pub fn fragment_key(&self, peer: [u8; 16]) -> FragmentKey {
        FragmentKey {
            peer,
            id: self.fragment_id,
            protocol: self.protocol,
            ipv6: u8::from(self.ipv6),
            _pad: [0; 2],
        }
    }

    pub fn has_ports(&self) -> bool {
        self.protocol == IPPROTO_TCP || self.protocol == IPPROTO_UDP
    }

    pub fn is_icmp(&self) -> bool {
        (!self.ipv6 && self.protocol == IPPROTO_ICMP)
            || (self.ipv6 && self.protocol == IPPROTO_ICMPV6)
    }

    /// Whether the destination is a loopback address (127.0.0.0/8 or ::1).
    pub fn is_for_loopback(&self) -> bool {
        if self.ipv6 {
            self.dst == IPV6_LOOPBACK
        } else {
            self.dst[0] == 127
        }
    }

    /// Whether the destination is the host's own address.
    pub fn is_for_host(&self, config: &DatapathConfig) -> bool {
        is_host_address(&self.dst, self.ipv6, config)
    }

    /// Whether the source is the host's own address.
    pub fn is_from_host(&self, config: &DatapathConfig) -> bool {
        is_host_address(&self.src, self.ipv6, config)
    }

    /// Whether the source is a loopback address (127.0.0.0/8 or ::1).
    pub fn is_from_loopback(&self) -> bool {
        if self.ipv6 {
            self.src == IPV6_LOOPBACK
        } else {
            self.src[0] == 127
        }
    }

    /// Whether the destination is not a unicast address of the public network: IPv4
    /// multicast, reserved and broadcast (224.0.0.0 and up), link-local 169.254/16;
    /// IPv6 multicast ff00::/8 and link-local fe80::/10.
    pub fn is_to_link_or_group(&self) -> bool {
        if self.ipv6 {
            self.dst[0] == 0xff || (self.dst[0] == 0xfe && self.dst[1] & 0xc0 == 0x80)
        } else {
            self.dst[0] >= 224 || (self.dst[0] == 169 && self.dst[1] == 254)
        }
    }

    /// Whether the source is one no host on the network can have: the host's own
    /// addresses, loopback, unspecified, multicast, reserved or broadcast, and for IPv6
    /// also IPv4-mapped addresses.
    pub fn has_impossible_source(&self, config: &DatapathConfig) -> bool {
        if self.is_from_host(config) || self.is_from_loopback() {
            return true;
        }
        let src = &self.src;
        if self.ipv6 {
            let mapped = src[..10] == [0; 10] && src[10] == 0xff && src[11] == 0xff;
            *src == [0; 16] || src[0] == 0xff || mapped
        } else {
            src[0] == 0 || src[0] >= 224
        }
    }
}

/// Whether `address` (of an IPv6 or IPv4 packet) is the host's own.
#[inline(always)]
pub fn is_host_address(address: &[u8; 16], ipv6: bool, config: &DatapathConfig) -> bool {
    if ipv6 {
        config.has_ipv6 != 0 && *address == config.host_ipv6
    } else {
        config.has_ipv4 != 0 && address[..4] == config.host_ipv4
    }
}

/// Whether [`parse`] could find a received frame to be for a loopback address: `false`
/// only when its destination, read where [`parse`] reads it, is not one. Lets the
/// programs that look for such packets pass all others on after a read or two in
/// place, with no helper call.
#[inline(always)]
pub fn may_be_for_loopback(ctx: &TcContext) -> bool {
    match ethertype_in_place(ctx) {
        Some(ETH_P_IP) => {
            read::<u8>(ctx, ETH_HLEN + IPV4_DESTINATION_OFFSET).is_none_or(|first| first == 127)
        }
        Some(ETH_P_IPV6) => read::<[u8; 16]>(ctx, ETH_HLEN + IPV6_DESTINATION_OFFSET)
            .is_none_or(|dst| dst == IPV6_LOOPBACK),
        // Neither parses as IP (a frame too short for its EtherType is malformed).
        _ => false,
    }
}

const IPV6_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

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
    match ethertype(ctx) {
        Some(ethertype) => parse_ip(ctx, ethertype),
        None => Parsed::Malformed,
    }
}

/// [`parse`] for a frame a device received, with the EtherType the kernel read
/// ([`received_ethertype`]): one helper call fewer.
#[inline(always)]
pub fn parse_received(ctx: &TcContext) -> Parsed {
    parse_ip(ctx, received_ethertype(ctx))
}

/// The IP headers of a frame of EtherType `ethertype`.
#[inline(always)]
fn parse_ip(ctx: &TcContext, ethertype: u16) -> Parsed {
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx),
        ETH_P_IPV6 => parse_ipv6(ctx),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext) -> Parsed {
    // The fixed header in one read: each helper call costs more than the copy.
    let Ok(header) = ctx.load::<[u8; 20]>(ETH_HLEN) else {
        return Parsed::Malformed;
    };
    let version_ihl = header[0];
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let id = u16::from_be_bytes([header[4], header[5]]);
    let frag = u16::from_be_bytes([header[6], header[7]]);
    let protocol = header[IPV4_PROTOCOL_OFFSET];
    let src = [header[12], header[13], header[14], header[15]];
    let dst = [header[16], header[17], header[18], header[19]];
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
    Parsed::Ip(Flow {
        ipv6: false,
        protocol,
        first_protocol: protocol,
        l4_offset,
        fragment,
        fragment_id: u32::from(id),
        src: widen(src),
        dst: widen(dst),
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext) -> Parsed {
    // The fixed header in one read: each helper call costs more than the copy.
    let Ok(header) = ctx.load::<[u8; 40]>(ETH_HLEN) else {
        return Parsed::Malformed;
    };
    let version = header[0];
    let first_next = header[IPV6_NEXT_HEADER_OFFSET];
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    if version >> 4 != 6 {
        return Parsed::Malformed;
    }
    let mut next = first_next;
    let mut offset = ETH_HLEN + 40;
    let mut fragment = Fragment::Whole;
    let mut fragment_id = 0;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next) {
            break;
        }
        let (Ok(following), Ok(len)) = (ctx.load::<u8>(offset), ctx.load::<u8>(offset + 1)) else {
            return Parsed::Malformed;
        };
        let header_len = if next == IPV6_FRAGMENT {
            // One load at a time, each checked: verifiers before 5.17 refuse the code
            // LLVM makes of two loads checked together (it reads a stack slot that one
            // path leaves unwritten).
            let Ok(frag) = ctx.load::<u16>(offset + 2).map(u16::from_be) else {
                return Parsed::Malformed;
            };
            let Ok(id) = ctx.load::<u32>(offset + 4).map(u32::from_be) else {
                return Parsed::Malformed;
            };
            fragment_id = id;
            fragment = if frag & 0xfff8 != 0 {
                Fragment::Later
            } else if frag & 1 != 0 {
                Fragment::First
            } else {
                Fragment::Whole
            };
            8
        } else {
            ipv6_extension_len(next, len)
        };
        next = following;
        offset += header_len;
    }
    Parsed::Ip(Flow {
        ipv6: true,
        protocol: next,
        first_protocol: first_next,
        l4_offset: offset,
        fragment,
        fragment_id,
        src,
        dst,
    })
}

/// `T` at `offset`, straight from the packet's linear data when it lies there (no
/// helper call; the headers of what a stack sent or a driver received always do),
/// else through `bpf_skb_load_bytes`. Constant offsets only: the verifier checks the
/// direct read against the linear data's end.
#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() <= ctx.data_end() {
        // SAFETY: within the packet's linear data, as just checked.
        Some(unsafe { core::ptr::read_unaligned(start as *const T) })
    } else {
        ctx.load::<T>(offset).ok()
    }
}

/// The furthest offset [`write`] writes at in place: a bound the verifier sees on the
/// variable offsets of transport headers (past it, the helper writes).
const MAX_WRITE_IN_PLACE: usize = 512;

/// Writes `value` at `offset`, straight into the packet's linear data when it lies
/// there, else through `bpf_skb_store_bytes` (one helper call fewer: ~40 ns of a
/// translated packet's cost). A program that writes in place has the kernel make a
/// cloned packet's header its own before the program runs, as the helper would before
/// writing: a copy only where the header is shared (a packet socket's clone; not
/// TCP's clones, whose headers are private).
#[inline(always)]
pub fn write<T: Copy>(ctx: &TcContext, offset: usize, value: &T) -> Result<(), ()> {
    let start = ctx.data() + offset;
    if offset <= MAX_WRITE_IN_PLACE && start + core::mem::size_of::<T>() <= ctx.data_end() {
        // SAFETY: within the packet's linear data, as just checked.
        unsafe { core::ptr::write_unaligned(start as *mut T, *value) };
        Ok(())
    } else {
        ctx.store(offset, value, 0).map_err(drop)
    }
}

/// A whole TCP or UDP packet as [`parse_with_ports`] reads it.
pub struct PortsFrame {
    pub flow: Flow,
    pub sport: u16,
    pub dport: u16,
    pub source_mac: [u8; 6],
}

/// The common case, read in one go from the frame's start, with no helper call when
/// the headers lie in the linear data: a whole (unfragmented) TCP or UDP packet,
/// IPv4 without options or IPv6 without extension headers, its transport header all
/// there, untagged, and the frame's EtherType the one `skb->protocol` gives (so on a
/// transmit path too, whatever a raw socket set, it is what [`parse`] would find).
/// `None` for every other frame, which [`parse_received`] or [`parse`] and [`ports`]
/// then read.
#[inline(always)]
pub fn parse_with_ports(ctx: &TcContext) -> Option<PortsFrame> {
    let ethertype = received_ethertype(ctx);
    let (flow, ports, source_mac) = match ethertype {
        ETH_P_IP => {
            let frame = read::<[u8; ETH_HLEN + 24]>(ctx, 0)?;
            let header = &frame[ETH_HLEN..];
            // Version 4, IHL 5; neither "more fragments" nor an offset.
            if u16::from_be_bytes([frame[12], frame[13]]) != ethertype
                || header[0] != 0x45
                || u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0
            {
                return None;
            }
            let flow = Flow {
                ipv6: false,
                protocol: header[IPV4_PROTOCOL_OFFSET],
                first_protocol: header[IPV4_PROTOCOL_OFFSET],
                l4_offset: ETH_HLEN + 20,
                fragment: Fragment::Whole,
                fragment_id: u32::from(u16::from_be_bytes([header[4], header[5]])),
                src: widen([header[12], header[13], header[14], header[15]]),
                dst: widen([header[16], header[17], header[18], header[19]]),
            };
            (
                flow,
                [header[20], header[21], header[22], header[23]],
                source_mac(&frame),
            )
        }
        ETH_P_IPV6 => {
            let frame = read::<[u8; ETH_HLEN + 44]>(ctx, 0)?;
            let header = &frame[ETH_HLEN..];
            if u16::from_be_bytes([frame[12], frame[13]]) != ethertype || header[0] >> 4 != 6 {
                return None;
            }
            let mut flow = Flow {
                ipv6: true,
                protocol: header[IPV6_NEXT_HEADER_OFFSET],
                first_protocol: header[IPV6_NEXT_HEADER_OFFSET],
                l4_offset: ETH_HLEN + 40,
                ..Flow::NONE
            };
            flow.src.copy_from_slice(&header[8..24]);
            flow.dst.copy_from_slice(&header[24..40]);
            (
                flow,
                [header[40], header[41], header[42], header[43]],
                source_mac(&frame),
            )
        }
        _ => return None,
    };
    if !flow.has_ports() || (ctx.len() as usize) < flow.l4_offset + transport_min_len(&flow) {
        return None;
    }
    Some(PortsFrame {
        flow,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        source_mac,
    })
}

/// Where a program reads a frame, which says how to parse what
/// [`parse_with_ports`] leaves.
#[derive(Clone, Copy)]
pub enum HookKind {
    /// A receiving hook: [`parse_received`].
    Receive,
    /// A transmit path: [`parse`].
    Transmit,
}

/// A TCP or UDP packet's flow and ports (not a later fragment, which has none): the
/// common case read in one go ([`parse_with_ports`]), anything else parsed as `hook`
/// says and then [`ports`].
#[inline(always)]
pub fn flow_with_ports(ctx: &TcContext, hook: HookKind) -> Option<(Flow, u16, u16)> {
    if let Some(frame) = parse_with_ports(ctx) {
        return Some((frame.flow, frame.sport, frame.dport));
    }
    let parsed = match hook {
        HookKind::Receive => parse_received(ctx),
        HookKind::Transmit => parse(ctx),
    };
    let Parsed::Ip(flow) = parsed else {
        return None;
    };
    if !flow.has_ports() || flow.fragment == Fragment::Later {
        return None;
    }
    let (sport, dport) = ports(ctx, &flow)?;
    Some((flow, sport, dport))
}

/// The source MAC of an Ethernet frame.
#[inline(always)]
fn source_mac(frame: &[u8]) -> [u8; 6] {
    [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]
}

/// The length of an IPv6 extension header of type `next` whose length byte is `len`,
/// but a fragment header (8 bytes, its second byte reserved): an authentication
/// header counts 4-byte units less two, the others 8-byte units less one. (Callers
/// branch on the fragment header once: a second branch on it in each of the walk's
/// six rounds is more paths than 5.10's verifier explores.)
#[inline(always)]
pub fn ipv6_extension_len(next: u8, len: u8) -> usize {
    if next == IPV6_AUTH {
        (usize::from(len) + 2) * 4
    } else {
        (usize::from(len) + 1) * 8
    }
}

/// Source and destination ports of a TCP or UDP flow, or `None` when the transport
/// header is not all there (truncated packets are never steered by port).
#[inline(always)]
pub fn ports(ctx: &TcContext, flow: &Flow) -> Option<(u16, u16)> {
    if (ctx.len() as usize) < flow.l4_offset + transport_min_len(flow) {
        return None;
    }
    let ports = ctx.load::<[u8; 4]>(flow.l4_offset).ok()?;
    Some((
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    ))
}

/// The shortest TCP or UDP header of `flow`.
#[inline(always)]
fn transport_min_len(flow: &Flow) -> usize {
    if flow.protocol == IPPROTO_TCP {
        TCP_MIN_HLEN
    } else {
        UDP_HLEN
    }
}

#[inline(always)]
pub fn widen(ipv4: [u8; 4]) -> [u8; 16] {
    let mut address = [0u8; 16];
    address[..4].copy_from_slice(&ipv4);
    address
}
