//! Crafted Ethernet frames for BPF test runs. Headers carry correct lengths; checksums
//! are left zero because no program here validates them.
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::lab::{HOST_IPV4, HOST_IPV6, REMOTE_IPV4, REMOTE_IPV6};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 hop-by-hop options extension header.
pub const IPPROTO_HOPOPTS: u8 = 0;

/// The source MAC of crafted frames; test runs configure it as the host's (and so the
/// containers') MAC.
pub const FRAME_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The destination MAC of crafted frames: test runs take the frame to arrive on the
/// loopback device, whose address is all zeros, so it is addressed to this host
/// (`PACKET_HOST`).
pub const FRAME_DST_MAC: [u8; 6] = [0; 6];

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&FRAME_DST_MAC);
    frame.extend_from_slice(&FRAME_SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn ipv4_header(protocol: u8, l4_len: usize, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let total = u16::try_from(20 + l4_len).expect("IPv4 packet too long");
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&dst.octets());
    header
}

fn ipv6_header(next_header: u8, payload_len: usize, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let len = u16::try_from(payload_len).expect("IPv6 payload too long");
    let mut header = vec![0x60, 0, 0, 0];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[next_header, 64]);
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&dst.octets());
    header
}

fn udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload_len).expect("UDP datagram too long");
    let mut segment = Vec::new();
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    segment.extend_from_slice(&len.to_be_bytes());
    segment.extend_from_slice(&[0, 0]);
    segment.resize(8 + payload_len, 0x5a);
    segment
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&sport.to_be_bytes());
    segment.extend_from_slice(&dport.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
    segment.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // 20 bytes, SYN
    segment
}

fn icmp_echo_request(icmp_type: u8, id: u16) -> Vec<u8> {
    let mut message = vec![icmp_type, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0, 1]);
    message.resize(8 + 56, 0xab);
    message
}

/// An IPv4 packet from remote to host carrying `l4`.
pub fn ipv4(protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(ETH_P_IP);
    frame.extend(ipv4_header(protocol, l4.len(), REMOTE_IPV4, HOST_IPV4));
    frame.extend_from_slice(l4);
    frame
}

/// An IPv6 packet from remote to host whose first next-header is `next_header`.
pub fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(ETH_P_IPV6);
    frame.extend(ipv6_header(
        next_header,
        payload.len(),
        REMOTE_IPV6,
        HOST_IPV6,
    ));
    frame.extend_from_slice(payload);
    frame
}

pub fn ipv4_udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    ipv4(IPPROTO_UDP, &udp(sport, dport, payload_len))
}

pub fn ipv4_tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    ipv4(IPPROTO_TCP, &tcp_syn(sport, dport))
}

pub fn ipv4_icmp_echo(id: u16) -> Vec<u8> {
    ipv4(IPPROTO_ICMP, &icmp_echo_request(8, id))
}

/// GRE: an IP protocol with no ports.
pub fn ipv4_gre() -> Vec<u8> {
    ipv4(IPPROTO_GRE, &[0, 0, 0x08, 0x00])
}

pub fn ipv6_udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    ipv6(IPPROTO_UDP, &udp(sport, dport, payload_len))
}

pub fn ipv6_tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    ipv6(IPPROTO_TCP, &tcp_syn(sport, dport))
}

pub fn ipv6_icmp_echo(id: u16) -> Vec<u8> {
    ipv6(IPPROTO_ICMPV6, &icmp_echo_request(128, id))
}

/// IPv6 with a hop-by-hop options header in front of UDP.
pub fn ipv6_hop_by_hop_udp(sport: u16, dport: u16) -> Vec<u8> {
    // Next header UDP, length 0 (8 bytes), PadN option filling the rest.
    let mut payload = vec![IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
    payload.extend(udp(sport, dport, 16));
    ipv6(IPPROTO_HOPOPTS, &payload)
}

/// An ARP request from remote for the host's address.
pub fn arp_request() -> Vec<u8> {
    let mut frame = ethernet(ETH_P_ARP);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&FRAME_SRC_MAC);
    frame.extend_from_slice(&REMOTE_IPV4.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&HOST_IPV4.octets());
    frame
}

/// An 802.1Q-tagged IPv4 UDP frame (VLAN 100).
pub fn vlan_ipv4_udp(sport: u16, dport: u16) -> Vec<u8> {
    let inner = ipv4_udp(sport, dport, 16);
    let mut frame = ethernet(ETH_P_8021Q);
    frame.extend_from_slice(&100_u16.to_be_bytes());
    frame.extend_from_slice(&inner[12..]); // inner EtherType and the IP packet
    frame
}

/// A bare Ethernet header announcing `ethertype` with nothing after it.
pub fn truncated(ethertype: u16) -> Vec<u8> {
    ethernet(ethertype)
}

/// An Ethernet frame carrying `payload`.
pub fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(ethertype);
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet (no Ethernet header) with `options` (a multiple of 4 bytes) and the
/// fragment field `flags_offset` (0x2000 = more fragments; the low 13 bits the offset).
pub fn ipv4_packet_full(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    flags_offset: u16,
    l4: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "IPv4 options come in 4-byte words");
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + l4.len()).expect("IPv4 packet too long");
    let mut packet = vec![0x40 | (header_len / 4) as u8, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0x12, 0x34]);
    packet.extend_from_slice(&flags_offset.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(options);
    packet.extend_from_slice(l4);
    packet
}

/// A plain IPv4 packet (no Ethernet header).
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_packet_full(src, dst, protocol, &[], 0x4000, l4)
}

/// An IPv6 packet (no Ethernet header) whose payload starts with `next_header`.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = ipv6_header(next_header, payload.len(), src, dst);
    packet.extend_from_slice(payload);
    packet
}

/// A UDP header and `payload_len` bytes of payload.
pub fn udp_segment(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    udp(sport, dport, payload_len)
}

/// A 20-byte TCP SYN.
pub fn tcp_segment(sport: u16, dport: u16) -> Vec<u8> {
    tcp_syn(sport, dport)
}

/// An ICMP or ICMPv6 echo message of `icmp_type` with identifier `id`.
pub fn echo(icmp_type: u8, id: u16) -> Vec<u8> {
    icmp_echo_request(icmp_type, id)
}

/// An ICMP(v6) error of `icmp_type`/`code` quoting `original` (an IP packet); `extra`
/// fills the 4 bytes after the checksum (the MTU for "packet too big").
pub fn icmp_error(icmp_type: u8, code: u8, extra: u32, original: &[u8]) -> Vec<u8> {
    let mut message = vec![icmp_type, code, 0, 0];
    message.extend_from_slice(&extra.to_be_bytes());
    message.extend_from_slice(original);
    message
}

/// An IPv6 extension header of `len_words` 8-byte units after the first 8, followed by
/// `next`, padded with zeros.
pub fn ipv6_ext_header(next: u8, len_words: u8) -> Vec<u8> {
    let mut header = vec![next, len_words];
    header.resize(8 * (usize::from(len_words) + 1), 0);
    header
}

/// An IPv6 fragment header: `offset_words` 8-byte units in, more to come or not, of
/// datagram `id`.
pub fn ipv6_fragment(next: u8, offset_words: u16, more: bool, id: u32) -> Vec<u8> {
    let field = (offset_words << 3) | u16::from(more);
    let mut header = vec![next, 0];
    header.extend_from_slice(&field.to_be_bytes());
    header.extend_from_slice(&id.to_be_bytes());
    header
}

/// [`ipv4_packet_full`] as a fragment of datagram `id`: `offset_words` 8-byte units in,
/// more to come or not.
pub fn ipv4_fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    id: u16,
    offset_words: u16,
    more: bool,
    payload: &[u8],
) -> Vec<u8> {
    let flags_offset = offset_words | if more { 0x2000 } else { 0 };
    let mut packet = ipv4_packet_full(src, dst, protocol, &[], flags_offset, payload);
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fills in the header checksum of the IPv4 packet at the start of `packet`.
pub fn fix_ipv4_checksum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].copy_from_slice(&[0, 0]);
    let checksum = internet_checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
}

/// Fills in the IPv4 header checksum and the checksum of the ICMP message after the
/// header of the IPv4 packet `packet`.
pub fn fix_ipv4_icmp_checksums(packet: &mut [u8]) {
    fix_ipv4_checksum(packet);
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    packet[header_len + 2..header_len + 4].copy_from_slice(&[0, 0]);
    let checksum = internet_checksum(&packet[header_len..]);
    packet[header_len + 2..header_len + 4].copy_from_slice(&checksum.to_be_bytes());
}

/// Fills in the checksum of the UDP datagram at `udp_offset` in the IPv6 packet
/// `packet` (whose upper-layer length is the datagram's).
pub fn fix_ipv6_udp_checksum(packet: &mut [u8], udp_offset: usize) {
    let udp_len = packet.len() - udp_offset;
    packet[udp_offset + 6..udp_offset + 8].copy_from_slice(&[0, 0]);
    let mut pseudo = Vec::with_capacity(40 + udp_len);
    pseudo.extend_from_slice(&packet[8..40]); // source and destination
    pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&packet[udp_offset..]);
    let checksum = internet_checksum(&pseudo);
    packet[udp_offset + 6..udp_offset + 8].copy_from_slice(&checksum.to_be_bytes());
}

/// Sets a frame's destination and source MAC addresses.
pub fn with_macs(mut frame: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}
