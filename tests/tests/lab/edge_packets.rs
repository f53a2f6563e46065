//! Edge packets through a real interface: raw frames from `remote` to the host's
//! public interface. Packets with IPv4 options or IPv6 extension headers, and a
//! fragmented datagram's fragments, reach the owner of their port; VLAN-tagged and
//! truncated frames go to the host and never to a container. (Each decision is also checked in tests/bpf/inbound.rs; frames
//! shorter than an IP header can only be sent this way.)
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use netiso_common::{Direction, TrafficClass};
use netiso_tests::{
    isolation::IsolationLab,
    lab::{HOST_IPV4, HOST_IPV6, PUBLIC_IFACE, REMOTE_IPV4, REMOTE_IPV6, mac_of, send_raw_frames},
    packets::{
        ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_HOPOPTS, IPPROTO_UDP, fix_ipv4_checksum,
        fix_ipv6_udp_checksum, frame, ipv4_packet_full, ipv6_ext_header, ipv6_packet, udp_segment,
        with_macs,
    },
    wait::wait_until,
};

fn bound(lab: &IsolationLab, ns_socket: SocketAddr, in_host: bool) -> UdpSocket {
    let ns = if in_host {
        &lab.lab.host
    } else {
        &lab.container(0).netns
    };
    let socket = ns.run(|| UdpSocket::bind(ns_socket).expect("binding"));
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

fn nothing_waiting(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    matches!(socket.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn raw_edge_frames_reach_the_owner_or_the_host_and_never_another_container() {
    let mut lab = IsolationLab::new();
    lab.add_container("c1", "30016-30031", "31000-31499");
    let host_mac = mac_of(&lab.lab.host, PUBLIC_IFACE);
    let remote_mac = mac_of(&lab.lab.remote, PUBLIC_IFACE);
    let raw = |ethertype, packet: &[u8]| with_macs(frame(ethertype, packet), host_mac, remote_mac);

    // IPv4 with four NOP options to 31001 (UDP checksum 0: none, allowed for IPv4).
    let c1_v4 = bound(&lab, "0.0.0.0:31001".parse().unwrap(), false);
    let mut options = ipv4_packet_full(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &[1, 1, 1, 1],
        0x4000,
        &udp_segment(40000, 31001, 7),
    );
    fix_ipv4_checksum(&mut options);
    // IPv6 with hop-by-hop and destination options headers to 31002.
    let c1_v6 = bound(&lab, "[::]:31002".parse().unwrap(), false);
    let mut chain = ipv6_ext_header(60, 0);
    chain.extend(ipv6_ext_header(IPPROTO_UDP, 0));
    chain.extend(udp_segment(40000, 31002, 9));
    let mut extension = ipv6_packet(REMOTE_IPV6, HOST_IPV6, IPPROTO_HOPOPTS, &chain);
    fix_ipv6_udp_checksum(&mut extension, 40 + 16);
    send_raw_frames(
        &lab.lab.remote,
        PUBLIC_IFACE,
        &[raw(ETH_P_IP, &options), raw(ETH_P_IPV6, &extension)],
    );
    let mut buf = [0u8; 64];
    assert_eq!(c1_v4.recv(&mut buf).expect("the options datagram"), 7);
    assert_eq!(
        c1_v6.recv(&mut buf).expect("the extension-header datagram"),
        9
    );
    assert_eq!(lab.counters(0).rx_packets, 2);

    // The rest is addressed to container 1's port 31003 too: the fragmented datagram
    // reaches it (its second fragment following the first), the others must not.
    let c1_port = bound(&lab, "0.0.0.0:31003".parse().unwrap(), false);
    let host_socket = bound(&lab, "0.0.0.0:31003".parse().unwrap(), true);
    // A datagram in two fragments: container 1 reassembles it.
    let payload = udp_segment(40000, 31003, 16); // 24 bytes: 16 + 8
    let mut first = ipv4_packet_full(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &[],
        0x2000,
        &payload[..16],
    );
    let mut second = ipv4_packet_full(REMOTE_IPV4, HOST_IPV4, IPPROTO_UDP, &[], 2, &payload[16..]);
    // Both fragments share the identification (0x1234) and the header length of the
    // whole datagram is implied by the last fragment's offset.
    fix_ipv4_checksum(&mut first);
    fix_ipv4_checksum(&mut second);
    let mut vlan = frame(ETH_P_8021Q, &[0, 100]);
    vlan.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut plain = ipv4_packet_full(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &[],
        0x4000,
        &udp_segment(40000, 31003, 4),
    );
    fix_ipv4_checksum(&mut plain);
    vlan.extend_from_slice(&plain);
    let vlan = with_macs(vlan, host_mac, remote_mac);
    let truncated_ip = raw(ETH_P_IP, &plain[..8]);
    let truncated_udp = raw(ETH_P_IP, &plain[..20 + 4]);
    let before = lab.datapath().public_iface_counters().unwrap();
    send_raw_frames(
        &lab.lab.remote,
        PUBLIC_IFACE,
        &[
            raw(ETH_P_IP, &first),
            raw(ETH_P_IP, &second),
            vlan,
            truncated_ip,
            truncated_udp,
        ],
    );
    let n = c1_port
        .recv(&mut buf)
        .expect("the reassembled datagram in container 1");
    assert_eq!(n, 16);
    // All five frames crossed the public interface: fragments and the truncated UDP
    // as ipv4_udp, the VLAN-tagged and the truncated IP header as other.
    wait_until(
        "the edge frames to be counted",
        Duration::from_secs(10),
        || {
            let now = lab.datapath().public_iface_counters().unwrap();
            now.get(Direction::Ingress, TrafficClass::Other).packets
                >= before.get(Direction::Ingress, TrafficClass::Other).packets + 2
        },
    );
    let after = lab.datapath().public_iface_counters().unwrap();
    let grew = |class| {
        after.get(Direction::Ingress, class).packets - before.get(Direction::Ingress, class).packets
    };
    assert_eq!(grew(TrafficClass::Ipv4Udp), 3);
    assert_eq!(grew(TrafficClass::Other), 2);
    assert!(
        nothing_waiting(&c1_port),
        "container 1 receives none of the others"
    );
    assert!(nothing_waiting(&host_socket), "nor does the host's socket");
    assert_eq!(
        lab.counters(0).rx_packets,
        4,
        "the two fragments, nothing more, were steered"
    );
}
