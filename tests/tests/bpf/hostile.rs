//! Hostile frames, through BPF_PROG_TEST_RUN: what a container with raw sockets or the
//! network could send to break isolation, and the counter each refusal lands in.
use super::fixtures::*;

/// A fragment of UDP datagram `id` from the host to `dst` starting with a UDP header
/// from `sport` to `dport`: the first one (`offset_words` 0, more to come), or a
/// later one whose payload reads like those ports, as an attacker would shape it.
fn fragment4(dst: Ipv4Addr, id: u16, offset_words: u16, sport: u16, dport: u16) -> Vec<u8> {
    let first = offset_words == 0;
    let payload = udp_segment(sport, dport, if first { 24 } else { 8 });
    frame(
        ETH_P_IP,
        &ipv4_fragment(
            HOST_IPV4,
            dst,
            IPPROTO_UDP,
            id,
            offset_words,
            first,
            &payload,
        ),
    )
}

fn first_fragment4(dst: Ipv4Addr, sport: u16, dport: u16, id: u16) -> Vec<u8> {
    fragment4(dst, id, 0, sport, dport)
}

fn later_fragment4(dst: Ipv4Addr, id: u16, fake_sport: u16, fake_dport: u16) -> Vec<u8> {
    fragment4(dst, id, 4, fake_sport, fake_dport)
}

fn fragment6(dst: Ipv6Addr, id: u32, offset_words: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut chain = ipv6_fragment(IPPROTO_UDP, offset_words, more, id);
    chain.extend_from_slice(payload);
    frame(ETH_P_IPV6, &ipv6_packet(HOST_IPV6, dst, 44, &chain))
}

#[test]
fn later_fragments_follow_their_first_fragment_and_nothing_else() {
    let mut ebpf = datapath();
    let out = |ebpf: &Ebpf, f: &[u8]| run(ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    // Alone, a later fragment is refused, wherever its payload "points".
    assert_eq!(
        out(&ebpf, &later_fragment4(REMOTE_IPV4, 9, 31000, 53)),
        SHOT
    );
    assert_eq!(
        out(&ebpf, &later_fragment4(HOST_IPV4, 10, 40000, 31500)),
        SHOT
    );
    assert_eq!(counters(&ebpf, 0).tx_dropped_fragment, 2);
    // A datagram the container starts from its own port: its later fragments follow.
    assert_eq!(
        out(&ebpf, &first_fragment4(REMOTE_IPV4, 30016, 53, 11)),
        REDIRECT
    );
    assert_eq!(
        out(&ebpf, &later_fragment4(REMOTE_IPV4, 11, 1, 2)),
        REDIRECT
    );
    // The same identification to another destination is another datagram.
    assert_eq!(out(&ebpf, &later_fragment4(OTHER_IPV4, 11, 1, 2)), SHOT);
    // Another container cannot continue it.
    send_as(&mut ebpf, 1);
    assert_eq!(out(&ebpf, &later_fragment4(REMOTE_IPV4, 11, 1, 2)), SHOT);
    assert_eq!(counters(&ebpf, 1).tx_dropped_fragment, 1);
    send_as(&mut ebpf, 0);
    // IPv6, through the fragment header.
    let first6 = fragment6(REMOTE_IPV6, 77, 0, true, &udp_segment(31499, 53, 16));
    let later6 = fragment6(REMOTE_IPV6, 77, 3, false, &udp_segment(31500, 31500, 8));
    let stray6 = fragment6(REMOTE_IPV6, 78, 3, false, &udp_segment(31500, 31500, 8));
    assert_eq!(out(&ebpf, &first6), REDIRECT);
    assert_eq!(out(&ebpf, &later6), REDIRECT);
    assert_eq!(out(&ebpf, &stray6), SHOT);
    let c0 = counters(&ebpf, 0);
    assert_eq!((c0.tx_packets, c0.tx_dropped_fragment), (4, 4));
}

#[test]
fn fragments_to_the_host_address_reach_the_owner_of_the_first_fragments_port_only() {
    let ebpf = datapath();
    let out = |f: &[u8]| run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    // Container 0 sends a fragmented datagram to container 1's port 31500 through the
    // host's address: every fragment goes to container 1, whatever its payload says.
    assert_eq!(out(&first_fragment4(HOST_IPV4, 30016, 31500, 21)), REDIRECT);
    assert_eq!(out(&later_fragment4(HOST_IPV4, 21, 40000, 31000)), REDIRECT);
    assert_eq!(counters(&ebpf, 1).rx_packets, 2);
    // A later fragment that names container 0's own port in its payload, with no first
    // fragment, reaches nobody.
    assert_eq!(out(&later_fragment4(HOST_IPV4, 22, 40000, 31001)), SHOT);
    assert_eq!(counters(&ebpf, 1).rx_packets, 2);
    assert_eq!(counters(&ebpf, 0).rx_packets, 0);
}

#[test]
fn forged_sources_do_not_leave() {
    let ebpf = datapath();
    let out = |f: &[u8]| run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    let udp4_from =
        |src: Ipv4Addr, dst: Ipv4Addr| v4(src, dst, IPPROTO_UDP, &udp_segment(30016, 53, 8));
    let udp6_from = |src: Ipv6Addr| v6(src, REMOTE_IPV6, IPPROTO_UDP, &udp_segment(30016, 53, 8));
    let other_mac = [0x02, 0x99, 0, 0, 0, 1];
    let spoofed = [
        udp4_from(Ipv4Addr::new(198, 18, 0, 99), REMOTE_IPV4),
        udp4_from(REMOTE_IPV4, REMOTE_IPV4),
        udp4_from(LOCALHOST4, REMOTE_IPV4),
        udp6_from("2001:db8::99".parse().unwrap()),
        udp6_from("fe80::1".parse().unwrap()),
        udp6_from(LOCALHOST6),
        // The host's address from another MAC, or from none to the network.
        with_macs(udp4_out(30016, REMOTE_IPV4, 53), [0; 6], other_mac),
        with_macs(udp4_out(30016, REMOTE_IPV4, 53), [0; 6], [0; 6]),
        // A forged source to the host's own services.
        udp4_from(Ipv4Addr::new(198, 18, 0, 99), HOST_IPV4),
    ];
    for f in &spoofed {
        assert_eq!(out(f), SHOT);
    }
    assert_eq!(counters(&ebpf, 0).tx_dropped_spoofed, spoofed.len() as u64);
    // What the container's lo sends out (no MAC, a loopback source) stays on the host
    // and is fine.
    let from_lo = with_macs(
        v4(
            LOCALHOST4,
            LOCALHOST4,
            IPPROTO_UDP,
            &udp_segment(30016, 22, 8),
        ),
        [0; 6],
        [0; 6],
    );
    assert_eq!(out(&from_lo), REDIRECT);
}

#[test]
fn containers_send_only_echo_requests_and_errors_about_their_own_traffic() {
    let ebpf = datapath();
    let out = |f: &[u8]| run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    // What container 0 received: remote → host:31000 (its port), or 31500 (container 1's).
    let received = |dport| {
        ipv4_packet(
            REMOTE_IPV4,
            HOST_IPV4,
            IPPROTO_UDP,
            &udp_segment(40000, dport, 8),
        )
    };
    let received6 = |dport| {
        ipv6_packet(
            REMOTE_IPV6,
            HOST_IPV6,
            IPPROTO_UDP,
            &udp_segment(40000, dport, 8),
        )
    };
    let icmp4 = |message: Vec<u8>| v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &message);
    let icmp6 = |message: Vec<u8>| v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_ICMPV6, &message);
    let allowed = [
        icmp4(echo(8, 0x1111)),
        icmp4(icmp_error(3, 3, 0, &received(31000))), // port unreachable
        icmp4(icmp_error(11, 1, 0, &received(31000))), // reassembly time exceeded
        icmp6(echo(128, 0x2222)),
        icmp6(icmp_error(1, 4, 0, &received6(31000))),
    ];
    for f in &allowed {
        assert_eq!(out(f), REDIRECT);
    }
    let refused = [
        // A redirect, to the host or to the network.
        v4(
            HOST_IPV4,
            HOST_IPV4,
            IPPROTO_ICMP,
            &icmp_error(
                5,
                1,
                u32::from(Ipv4Addr::new(198, 18, 0, 99)),
                &received(31000),
            ),
        ),
        icmp4(icmp_error(5, 1, 0, &received(31000))),
        // "Fragmentation needed" and "packet too big": the path MTU of every container.
        icmp4(icmp_error(3, 4, 576, &received(31000))),
        icmp6(icmp_error(2, 0, 1280, &received6(31000))),
        // Errors about another container's traffic.
        icmp4(icmp_error(3, 3, 0, &received(31500))),
        icmp6(icmp_error(1, 4, 0, &received6(31500))),
        // Replies, timestamps, router advertisements' kin.
        icmp4(echo(0, 0x1111)),
        icmp4(echo(13, 0x1111)),
        icmp6(echo(129, 0x2222)),
    ];
    for f in &refused {
        assert_eq!(out(f), SHOT);
    }
    let c0 = counters(&ebpf, 0);
    assert_eq!(
        (c0.tx_packets, c0.tx_dropped_icmp),
        (allowed.len() as u64, refused.len() as u64)
    );
}

#[test]
fn multicast_broadcast_and_link_local_destinations_stay_home() {
    let ebpf = datapath();
    let out = |f: &[u8]| run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    let udp4_to = |dst: [u8; 4]| udp4_out(30016, Ipv4Addr::from(dst), 5353);
    let udp6_to = |dst: &str| {
        v6(
            HOST_IPV6,
            dst.parse().unwrap(),
            IPPROTO_UDP,
            &udp_segment(30016, 5353, 8),
        )
    };
    let refused = [
        udp4_to([224, 0, 0, 251]),
        udp4_to([239, 255, 255, 250]),
        udp4_to([255, 255, 255, 255]),
        udp4_to([169, 254, 1, 1]),
        udp6_to("ff02::1"),
        udp6_to("ff02::fb"),
        udp6_to("ff05::1:3"),
        udp6_to("fe80::2"),
        v6(
            HOST_IPV6,
            "ff02::1".parse().unwrap(),
            IPPROTO_ICMPV6,
            &echo(128, 1),
        ),
    ];
    for f in &refused {
        assert_eq!(out(f), SHOT);
    }
    assert_eq!(
        counters(&ebpf, 0).tx_dropped_multicast,
        refused.len() as u64
    );
}

#[test]
fn inbound_packets_with_impossible_sources_never_reach_a_container() {
    let ebpf = datapath();
    let into = |f: &[u8]| run(&ebpf, PUBLIC_INGRESS_PROGRAM, f);
    let udp4_from = |src: Ipv4Addr| v4(src, HOST_IPV4, IPPROTO_UDP, &udp_segment(31100, 31000, 8));
    let udp6_from = |src: &str| {
        v6(
            src.parse().unwrap(),
            HOST_IPV6,
            IPPROTO_UDP,
            &udp_segment(31100, 31000, 8),
        )
    };
    let refused = [
        udp4_from(HOST_IPV4),
        udp4_from(LOCALHOST4),
        udp4_from(Ipv4Addr::UNSPECIFIED),
        udp4_from(Ipv4Addr::new(224, 0, 0, 1)),
        udp4_from(Ipv4Addr::BROADCAST),
        udp6_from("2001:db8::1"),
        udp6_from("::1"),
        udp6_from("::"),
        udp6_from("::ffff:198.18.0.2"),
        udp6_from("ff02::1"),
    ];
    for f in &refused {
        assert_eq!(into(f), SHOT);
    }
    let c0 = counters(&ebpf, 0);
    assert_eq!(
        (c0.rx_packets, c0.rx_dropped_spoofed_source),
        (0, refused.len() as u64)
    );
    // From a real remote: delivered.
    assert_eq!(into(&udp4_from(REMOTE_IPV4)), REDIRECT);
    assert_eq!(counters(&ebpf, 0).rx_packets, 1);
}

#[test]
fn frames_for_another_mac_go_to_the_host_which_drops_them() {
    let ebpf = datapath();
    let for_other = with_macs(
        udp4_in(31000),
        [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
        [0x02, 0, 0, 0, 0, 2],
    );
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &for_other), PIPE);
    assert_eq!(
        run(&ebpf, PUBLIC_INGRESS_PROGRAM, &udp4_in(31000)),
        REDIRECT
    );
    assert_eq!(counters(&ebpf, 0).rx_packets, 1);
}

#[test]
fn what_skips_the_containers_own_qdiscs_meets_its_egress_limit_on_the_host_side() {
    let mut ebpf = datapath();
    let mut policers: Array<_, EgressPolicer> =
        Array::try_from(ebpf.map_mut(EGRESS_POLICERS_MAP).unwrap()).unwrap();
    let budget = EgressPolicer {
        window_budget: 2500,
        ..Default::default()
    };
    policers.set(0, budget, 0).unwrap();
    let out = |ebpf: &Ebpf, f: &[u8]| run(ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    // 1000-byte frames: two fit in the window's budget, the rest are dropped.
    let frame = v4(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(30016, 53, 1000 - 14 - 20 - 8),
    );
    assert_eq!(frame.len(), 1000);
    let verdicts: Vec<u32> = (0..5).map(|_| out(&ebpf, &frame)).collect();
    assert_eq!(verdicts, [REDIRECT, REDIRECT, SHOT, SHOT, SHOT]);
    let c0 = counters(&ebpf, 0);
    assert_eq!((c0.tx_packets, c0.tx_dropped_rate_limit), (2, 3));
    // Container 1 has no limit.
    send_as(&mut ebpf, 1);
    let from_c1 = v4(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(31500, 53, 958),
    );
    assert!((0..5).all(|_| out(&ebpf, &from_c1) == REDIRECT));
}

/// `frame` (IPv4 without options) with `options` (a multiple of 4 bytes) after its
/// IPv4 header, the header's length and the packet's total length grown to match.
fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let (head, rest) = frame.split_at(14 + 20);
    let mut out = [head, options, rest].concat();
    out[14] = 0x45 + (options.len() / 4) as u8;
    let total = u16::from_be_bytes([out[16], out[17]]) + options.len() as u16;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out
}

#[test]
fn the_short_path_for_common_packets_sends_nothing_the_full_checks_refuse() {
    let ebpf = datapath();
    let out = |f: &[u8]| run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f);
    // IP options shaped like an owned source port (30016 → 53) where the short path
    // would read the ports; the real ports, after the options, are another's.
    let disguised_ports =
        with_ipv4_options(&udp4_out(32502, REMOTE_IPV4, 53), &[0x75, 0x40, 0x00, 0x35]);
    assert_eq!(out(&disguised_ports), SHOT);
    // Transport headers cut short, from an owned port: 8 bytes of TCP, 12 of TCP in
    // IPv6 (its ports all there, the rest of the header not).
    let mut short_tcp4 = v4(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_TCP,
        &tcp_segment(30016, 443),
    );
    short_tcp4.truncate(14 + 20 + 8);
    let mut short_tcp6 = tcp6_out(31499, 443);
    short_tcp6.truncate(14 + 40 + 12);
    for f in [&short_tcp4, &short_tcp6] {
        assert_eq!(out(f), SHOT);
    }
    // The same options in front of an owned port's datagram: it leaves as ever.
    let with_options = with_ipv4_options(&udp4_out(30016, REMOTE_IPV4, 53), &[1, 1, 1, 1]);
    assert_eq!(out(&with_options), REDIRECT);
    assert_eq!(
        counters(&ebpf, 0),
        ContainerCounters {
            tx_packets: 1,
            tx_bytes: with_options.len() as u64,
            tx_dropped_port_not_owned: 1,
            tx_dropped_malformed: 2,
            ..Default::default()
        }
    );
}
