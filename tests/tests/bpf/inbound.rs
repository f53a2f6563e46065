//! Inbound steering: packets from the network to the owners of their ports, edge
//! packets, ICMP errors to the container that sent the quoted packet.
use super::fixtures::*;

#[test]
fn inbound_tcp_and_udp_go_to_the_owner_of_the_destination_port() {
    let ebpf = datapath();
    let to_c0 = udp4_in(31001);
    let to_c1 = v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_TCP,
        &tcp_segment(40000, 31500),
    );
    let to_c0_v6 = udp6_in(31499);
    let to_c1_v6 = v6(
        REMOTE_IPV6,
        HOST_IPV6,
        IPPROTO_TCP,
        &tcp_segment(40000, 32000),
    );
    for f in [&to_c0, &to_c1, &to_c0_v6, &to_c1_v6] {
        assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, f), REDIRECT);
    }
    assert_eq!(counters(&ebpf, 0), rx(&[&to_c0, &to_c0_v6]));
    assert_eq!(counters(&ebpf, 1), rx(&[&to_c1, &to_c1_v6]));
}

#[test]
fn inbound_to_ports_nobody_owns_or_other_addresses_goes_to_the_host() {
    let ebpf = datapath();
    for f in [
        udp4_in(32502),
        udp4_in(22),
        udp6_in(32502),
        v4(
            REMOTE_IPV4,
            OTHER_IPV4,
            IPPROTO_UDP,
            &udp_segment(1, 31001, 4),
        ),
        v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_GRE, &[0, 0, 8, 0]),
        v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(8, 0x4242)),
        arp_request(),
    ] {
        assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &f), PIPE);
    }
    assert_eq!(counters(&ebpf, 0), ContainerCounters::default());
    assert_eq!(counters(&ebpf, 1), ContainerCounters::default());
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_are_walked_to_the_ports() {
    let ebpf = datapath();
    // Four NOP options: IHL 6. Mesos required IHL 5 and sent these to the host.
    let options = frame(
        ETH_P_IP,
        &ipv4_packet_full(
            REMOTE_IPV4,
            HOST_IPV4,
            IPPROTO_UDP,
            &[1, 1, 1, 1],
            0,
            &udp_segment(1, 31001, 8),
        ),
    );
    let mut ext = ipv6_ext_header(60, 0); // hop-by-hop, then destination options
    ext.extend(ipv6_ext_header(IPPROTO_UDP, 1));
    ext.extend(udp_segment(1, 31001, 8));
    let extension = v6(REMOTE_IPV6, HOST_IPV6, IPPROTO_HOPOPTS, &ext);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &options), REDIRECT);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &extension), REDIRECT);
    assert_eq!(counters(&ebpf, 0), rx(&[&options, &extension]));
}

#[test]
fn fragments_follow_their_first_fragment_to_its_ports_owner() {
    let ebpf = datapath();
    let udp = |dport| udp_segment(1, dport, 8);
    let v4_fragment = |id, offset, more, payload: &[u8]| {
        frame(
            ETH_P_IP,
            &ipv4_fragment(
                REMOTE_IPV4,
                HOST_IPV4,
                IPPROTO_UDP,
                id,
                offset,
                more,
                payload,
            ),
        )
    };
    let v6_fragment = |id, offset, more, payload: &[u8]| {
        let mut packet = ipv6_fragment(IPPROTO_UDP, offset, more, id);
        packet.extend_from_slice(payload);
        v6(REMOTE_IPV6, HOST_IPV6, 44, &packet)
    };
    // A datagram for container 0's port 31001, in three fragments, both families.
    let to_c0 = [
        v4_fragment(7, 0, true, &udp(31001)),
        v4_fragment(7, 2, true, &[0x5a; 16]),
        v4_fragment(7, 4, false, &[0x5a; 8]),
        v6_fragment(9, 0, true, &udp(31001)),
        v6_fragment(9, 2, false, &[0x5a; 8]),
    ];
    for f in &to_c0 {
        assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, f), REDIRECT);
    }
    // Later fragments of unknown datagrams, and a datagram for a port nobody owns
    // reusing an identification: the host's.
    for f in [
        v4_fragment(8, 2, false, &[0x5a; 8]),
        v6_fragment(10, 2, false, &[0x5a; 8]),
        v4_fragment(7, 0, true, &udp(32502)),
        v4_fragment(7, 2, false, &[0x5a; 8]),
    ] {
        assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &f), PIPE);
    }
    let delivered: Vec<&[u8]> = to_c0.iter().map(Vec::as_slice).collect();
    assert_eq!(counters(&ebpf, 0), rx(&delivered));
    assert_eq!(counters(&ebpf, 1), ContainerCounters::default());
}

#[test]
fn vlan_tags_and_truncated_transport_headers_go_to_the_host() {
    let ebpf = datapath();
    let inner = udp4_in(31001);
    let mut vlan = frame(ETH_P_8021Q, &[0, 100]);
    vlan.extend_from_slice(&inner[12..]);
    let mut short_tcp = v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_TCP, &tcp_segment(1, 31001));
    short_tcp.truncate(14 + 20 + 10);
    let mut short_udp = udp6_in(31001);
    short_udp.truncate(14 + 40 + 6);
    for f in [vlan, short_tcp, short_udp] {
        assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &f), PIPE);
    }
    assert_eq!(counters(&ebpf, 0), ContainerCounters::default());
}

#[test]
fn icmp_errors_go_to_the_container_that_sent_the_quoted_packet() {
    let ebpf = datapath();
    // "Fragmentation needed" about UDP container 0 sent from hostIP:31001.
    let quoted = ipv4_packet(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(31001, 53, 0),
    );
    let frag_needed = v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_ICMP,
        &icmp_error(3, 4, 1200, &quoted),
    );
    // "Packet too big" about TCP container 1 sent from [hostIP]:31500.
    let quoted6 = ipv6_packet(HOST_IPV6, REMOTE_IPV6, IPPROTO_TCP, &tcp_segment(31500, 80));
    let too_big = v6(
        REMOTE_IPV6,
        HOST_IPV6,
        IPPROTO_ICMPV6,
        &icmp_error(2, 0, 1280, &quoted6),
    );
    // An error quoting a packet with another source address is not about our packets.
    let foreign = ipv4_packet(
        OTHER_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(31001, 53, 0),
    );
    let not_ours = v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_ICMP,
        &icmp_error(3, 4, 1200, &foreign),
    );
    // An error about a host port stays with the host.
    let host_quoted = ipv4_packet(HOST_IPV4, REMOTE_IPV4, IPPROTO_UDP, &udp_segment(22, 53, 0));
    let for_host = v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_ICMP,
        &icmp_error(11, 0, 0, &host_quoted),
    );
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &frag_needed), REDIRECT);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &too_big), REDIRECT);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &not_ours), PIPE);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &for_host), PIPE);
    assert_eq!(counters(&ebpf, 0), rx(&[&frag_needed]));
    assert_eq!(counters(&ebpf, 1), rx(&[&too_big]));
}
