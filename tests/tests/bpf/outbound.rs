//! What containers send: owned ports leave, the rest is dropped and counted by
//! reason; echo conversations; local destinations; loopback semantics.
use super::fixtures::*;

#[test]
fn container_traffic_from_owned_ports_leaves_and_is_counted() {
    let ebpf = datapath();
    let from_ephemeral = udp4_out(30016, REMOTE_IPV4, 53);
    let from_port = tcp6_out(31499, 443);
    for f in [&from_ephemeral, &from_port] {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), REDIRECT);
    }
    let c0 = counters(&ebpf, 0);
    assert_eq!(c0.tx_packets, 2);
    let bytes: usize = [&from_ephemeral, &from_port].iter().map(|f| f.len()).sum();
    assert_eq!(c0.tx_bytes, bytes as u64);
}

#[test]
fn container_traffic_is_dropped_and_counted_by_reason() {
    let ebpf = datapath();
    let mut mld = ipv6_ext_header(IPPROTO_ICMPV6, 0);
    mld.extend_from_slice(&[143, 0, 0, 0, 0, 0, 0, 0]);
    let mut short_udp = udp4_out(30016, REMOTE_IPV4, 53);
    short_udp.truncate(14 + 20 + 4);
    let mut bad_ihl = udp4_out(30016, REMOTE_IPV4, 53);
    bad_ihl[14] = 0x44; // IHL 4 words: shorter than a header
    let cases = [
        (udp4_out(32502, REMOTE_IPV4, 53), "port"),
        (udp4_out(31500, REMOTE_IPV4, 53), "port"), // container 1's port
        (
            v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_UDP, &udp_segment(22, 53, 4)),
            "port",
        ),
        (short_udp, "malformed"),
        (bad_ihl, "malformed"),
        (arp_request(), "other"),
        (
            v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_GRE, &[0, 0, 8, 0]),
            "other",
        ),
        (v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_HOPOPTS, &mld), "other"),
        (
            v6(
                HOST_IPV6,
                REMOTE_IPV6,
                IPPROTO_ICMPV6,
                &[135, 0, 0, 0, 0, 0, 0, 0],
            ),
            "other",
        ),
        (frame(ETH_P_ARP, &[]), "other"),
    ];
    for (f, _) in &cases {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), SHOT);
    }
    let count = |reason| cases.iter().filter(|(_, r)| *r == reason).count() as u64;
    assert_eq!(
        counters(&ebpf, 0),
        ContainerCounters {
            tx_dropped_port_not_owned: count("port"),
            tx_dropped_malformed: count("malformed"),
            tx_dropped_other: count("other"),
            ..Default::default()
        }
    );
}

#[test]
fn container_echo_requests_are_remembered_and_their_replies_return() {
    let ebpf = datapath();
    let request = v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &echo(8, 0x4242));
    let request6 = v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_ICMPV6, &echo(128, 0x0707));
    assert_eq!(
        run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &request),
        REDIRECT
    );
    assert_eq!(
        run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &request6),
        REDIRECT
    );
    let echoes: HashMap<_, EchoKey, PortOwner> =
        HashMap::try_from(ebpf.map(ECHO_OWNERS_MAP).unwrap()).unwrap();
    let mut remote = [0u8; 16];
    remote[..4].copy_from_slice(&REMOTE_IPV4.octets());
    let key = EchoKey {
        remote,
        id: 0x4242u16.to_be(),
        ipv6: 0,
        _pad: 0,
    };
    assert_eq!(
        echoes.get(&key, 0).unwrap(),
        PortOwner::new(0, TEST_RUN_IFINDEX)
    );

    let reply = v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(0, 0x4242));
    let reply6 = v6(REMOTE_IPV6, HOST_IPV6, IPPROTO_ICMPV6, &echo(129, 0x0707));
    let unknown = v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(0, 0x4243));
    let other_remote = v4(OTHER_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(0, 0x4242));
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &reply), REDIRECT);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &reply6), REDIRECT);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &unknown), PIPE);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &other_remote), PIPE);
    let c0 = counters(&ebpf, 0);
    assert_eq!((c0.rx_packets, c0.tx_packets), (2, 2));
}

#[test]
fn container_traffic_to_local_addresses_goes_to_the_port_owner_or_the_host() {
    let ebpf = datapath();
    let to_c1 = udp4_out(30016, HOST_IPV4, 31500);
    let to_c1_loopback = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_TCP,
        &tcp_segment(31001, 31600),
    );
    let to_host_service = udp4_out(30016, LOCALHOST4, 22);
    for f in [&to_c1, &to_c1_loopback, &to_host_service] {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), REDIRECT);
    }
    assert_eq!(counters(&ebpf, 1), rx(&[&to_c1, &to_c1_loopback]));
    assert_eq!(counters(&ebpf, 0).tx_packets, 3);
}

// ---- host loopback, container eth0 and container lo ----

#[test]
fn host_loopback_traffic_to_container_ports_is_steered() {
    let ebpf = datapath();
    let to_c0 = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_UDP,
        &udp_segment(40000, 31001, 4),
    );
    let to_c1 = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_TCP,
        &tcp_segment(40000, 31500),
    );
    let via_host_ip = v4(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_TCP,
        &tcp_segment(40000, 31002),
    );
    let host_service = v4(LOCALHOST4, LOCALHOST4, IPPROTO_TCP, &tcp_segment(40000, 22));
    for f in [&to_c0, &to_c1, &via_host_ip] {
        assert_eq!(run(&ebpf, HOST_LO_INGRESS_PROGRAM, f), REDIRECT);
    }
    assert_eq!(run(&ebpf, HOST_LO_INGRESS_PROGRAM, &host_service), PIPE);
    assert_eq!(counters(&ebpf, 0), rx(&[&to_c0, &via_host_ip]));
    assert_eq!(counters(&ebpf, 1), rx(&[&to_c1]));
}

#[test]
fn container_eth0_hands_loopback_destinations_to_lo() {
    let ebpf = datapath();
    let to_lo4 = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_UDP,
        &udp_segment(1, 31001, 4),
    );
    let to_lo6 = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_UDP,
        &udp_segment(1, 31001, 4),
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &to_lo4),
        REDIRECT
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &to_lo6),
        REDIRECT
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &udp4_in(31001)),
        PIPE
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &arp_request()),
        PIPE
    );
}

#[test]
fn container_lo_keeps_its_own_ports_and_sends_the_rest_out() {
    let ebpf = datapath();
    let own = v4(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_TCP,
        &tcp_segment(30016, 31001),
    );
    let others = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_TCP,
        &tcp_segment(30016, 31500),
    );
    let host = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_UDP,
        &udp_segment(30016, 22, 4),
    );
    let ping = v4(HOST_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(8, 1));
    assert_eq!(run(&ebpf, CONTAINER_LO_INGRESS_PROGRAM, &own), PIPE);
    assert_eq!(run(&ebpf, CONTAINER_LO_INGRESS_PROGRAM, &others), REDIRECT);
    assert_eq!(run(&ebpf, CONTAINER_LO_INGRESS_PROGRAM, &host), REDIRECT);
    assert_eq!(run(&ebpf, CONTAINER_LO_INGRESS_PROGRAM, &ping), PIPE);
}
