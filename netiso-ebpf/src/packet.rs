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
