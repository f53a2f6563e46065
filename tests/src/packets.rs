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

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
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
    frame.extend_from_slice(&SRC_MAC);
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
