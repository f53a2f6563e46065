//! Every steering decision of the tc programs, through BPF_PROG_TEST_RUN on crafted
//! frames: exact verdicts, exact per-container counters, the echo table. Includes the
//! edge packets (IPv4 options, IPv6 extension headers, fragments, VLAN tags,
//! truncated transport headers, ICMP errors). Frames shorter than an IP header cannot
//! go through test runs (the kernel refuses them) and are covered by the lab.
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use netiso::datapath::{EBPF_OBJECT, read_container_counters};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ETH0_IFINDEX_GLOBAL, CONTAINER_ETH0_INGRESS_PROGRAM,
    CONTAINER_LO_INGRESS_PROGRAM, CONTAINER_SLOT_GLOBAL, CONTAINER_VETH_INGRESS_PROGRAM,
    ContainerCounters, ECHO_OWNERS_MAP, EchoKey, HOST_LO_INGRESS_PROGRAM, PORT_OWNERS_MAP,
    PUBLIC_EGRESS_PROGRAM, PUBLIC_INGRESS_PROGRAM, PortOwner, VETH_CONTAINERS_MAP,
};
use netiso_tests::{
    lab::{HOST_IPV4, HOST_IPV6, REMOTE_IPV4, REMOTE_IPV6},
    packets::{
        ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_GRE, IPPROTO_HOPOPTS, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, arp_request, echo, frame, icmp_error,
        ipv4_packet, ipv4_packet_full, ipv6_ext_header, ipv6_fragment_header, ipv6_packet,
        tcp_segment, udp_segment,
    },
    test_run::{FLOWS_QDISC, configure_as_lab_host, enable_unique_flows, load_programs},
};

const PIPE: u32 = 3; // not ours: next program or the stack
const SHOT: u32 = 2; // dropped
const REDIRECT: u32 = 7; // steered (redirect, redirect_peer or redirect_neigh)

/// Container 0's host-side veth ifindex in the port table.
const C0_VETH: u32 = 101;
const C1_VETH: u32 = 102;
/// BPF_PROG_TEST_RUN runs on the loopback device of the caller's namespace.
const TEST_RUN_IFINDEX: u32 = 1;
/// Container 0's lo program is loaded with this eth0 ifindex.
const C0_ETH0: u32 = 7;

const LOCALHOST4: Ipv4Addr = Ipv4Addr::LOCALHOST;
const LOCALHOST6: Ipv6Addr = Ipv6Addr::LOCALHOST;
const OTHER_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

/// Loads every program with private maps set up as in the lab: container 0 owns
/// 31000-31499 and 30016-30031, container 1 owns 31500-32000; test runs see
/// container 0's veth.
fn datapath() -> Ebpf {
    let mut ebpf = EbpfLoader::new()
        .override_global(CONTAINER_SLOT_GLOBAL, &0u32, true)
        .override_global(CONTAINER_ETH0_IFINDEX_GLOBAL, &C0_ETH0, true)
        .load(EBPF_OBJECT)
        .expect("loading the eBPF object");
    load_programs(
        &mut ebpf,
        &[
            PUBLIC_INGRESS_PROGRAM,
            CONTAINER_VETH_INGRESS_PROGRAM,
            PUBLIC_EGRESS_PROGRAM,
            HOST_LO_INGRESS_PROGRAM,
            CONTAINER_ETH0_INGRESS_PROGRAM,
            CONTAINER_LO_INGRESS_PROGRAM,
        ],
    );
    configure_as_lab_host(&mut ebpf);
    let mut owners: Array<_, PortOwner> =
        Array::try_from(ebpf.map_mut(PORT_OWNERS_MAP).unwrap()).unwrap();
    for (ports, owner) in [
        (31000..=31499, PortOwner::new(0, C0_VETH)),
        (30016..=30031, PortOwner::new(0, C0_VETH)),
        (31500..=32000, PortOwner::new(1, C1_VETH)),
    ] {
        for port in ports {
            owners.set(port, owner, 0).unwrap();
        }
    }
    let mut veths: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut(VETH_CONTAINERS_MAP).unwrap()).unwrap();
    veths.insert(TEST_RUN_IFINDEX, 0, 0).unwrap();
    ebpf
}

fn run(ebpf: &Ebpf, program: &str, frame: &[u8]) -> u32 {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

fn counters(ebpf: &Ebpf, slot: u32) -> ContainerCounters {
    read_container_counters(
        &PerCpuArray::try_from(ebpf.map(CONTAINER_COUNTERS_MAP).unwrap()).unwrap(),
        slot,
    )
    .unwrap()
}

fn rx(frames: &[&[u8]]) -> ContainerCounters {
    ContainerCounters {
        rx_packets: frames.len() as u64,
        rx_bytes: frames.iter().map(|f| f.len() as u64).sum(),
        ..Default::default()
    }
}

fn v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    frame(ETH_P_IP, &ipv4_packet(src, dst, protocol, l4))
}

fn v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    frame(ETH_P_IPV6, &ipv6_packet(src, dst, next, payload))
}

fn udp4_in(dport: u16) -> Vec<u8> {
    v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &udp_segment(40000, dport, 16),
    )
}

fn udp6_in(dport: u16) -> Vec<u8> {
    v6(
        REMOTE_IPV6,
        HOST_IPV6,
        IPPROTO_UDP,
        &udp_segment(40000, dport, 16),
    )
}

// ---- public interface ingress ----

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
fn fragments_vlan_tags_and_truncated_transport_headers_go_to_the_host() {
    let ebpf = datapath();
    let udp = udp_segment(1, 31001, 8);
    let first_v4 = frame(
        ETH_P_IP,
        &ipv4_packet_full(REMOTE_IPV4, HOST_IPV4, IPPROTO_UDP, &[], 0x2000, &udp),
    );
    let later_v4 = frame(
        ETH_P_IP,
        &ipv4_packet_full(REMOTE_IPV4, HOST_IPV4, IPPROTO_UDP, &[], 0x0003, &udp),
    );
    let mut frag6 = ipv6_fragment_header(IPPROTO_UDP, 0, true);
    frag6.extend(&udp);
    let first_v6 = v6(REMOTE_IPV6, HOST_IPV6, 44, &frag6);
    let inner = udp4_in(31001);
    let mut vlan = frame(ETH_P_8021Q, &[0, 100]);
    vlan.extend_from_slice(&inner[12..]);
    let mut short_tcp = v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_TCP, &tcp_segment(1, 31001));
    short_tcp.truncate(14 + 20 + 10);
    let mut short_udp = udp6_in(31001);
    short_udp.truncate(14 + 40 + 6);
    for f in [first_v4, later_v4, first_v6, vlan, short_tcp, short_udp] {
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

// ---- container veth ingress: what containers send ----

fn udp4_out(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    v4(HOST_IPV4, dst, IPPROTO_UDP, &udp_segment(sport, dport, 16))
}

fn tcp6_out(sport: u16, dport: u16) -> Vec<u8> {
    v6(
        HOST_IPV6,
        REMOTE_IPV6,
        IPPROTO_TCP,
        &tcp_segment(sport, dport),
    )
}

#[test]
fn container_traffic_from_owned_ports_leaves_and_is_counted() {
    let ebpf = datapath();
    let from_ephemeral = udp4_out(30016, REMOTE_IPV4, 53);
    let from_port = tcp6_out(31499, 443);
    let later_fragment = frame(
        ETH_P_IP,
        &ipv4_packet_full(HOST_IPV4, REMOTE_IPV4, IPPROTO_UDP, &[], 0x0005, &[0; 16]),
    );
    for f in [&from_ephemeral, &from_port, &later_fragment] {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), REDIRECT);
    }
    let c0 = counters(&ebpf, 0);
    assert_eq!(c0.tx_packets, 3);
    let bytes: usize = [&from_ephemeral, &from_port, &later_fragment]
        .iter()
        .map(|f| f.len())
        .sum();
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

// ---- unique egress flows: the fq_codel flow a packet leaves the host in ----

/// Offset of `priority` in `struct __sk_buff` (include/uapi/linux/bpf.h).
const SKB_PRIORITY_OFFSET: usize = 32;
/// At least `struct __sk_buff` (192 bytes on 6.1 and 6.18): the kernel refuses to
/// write the context back into less, and takes trailing zeros as input.
const SKB_CONTEXT_SIZE: usize = 256;

/// Runs `program` on `frame` arriving with `priority`; its verdict and the priority
/// it leaves with.
fn run_with_priority(ebpf: &Ebpf, program: &str, frame: &[u8], priority: u32) -> (u32, u32) {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    let mut ctx_in = [0u8; SKB_CONTEXT_SIZE];
    ctx_in[SKB_PRIORITY_OFFSET..SKB_PRIORITY_OFFSET + 4].copy_from_slice(&priority.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_CONTEXT_SIZE];
    let verdict = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value;
    let out = u32::from_ne_bytes(
        ctx_out[SKB_PRIORITY_OFFSET..SKB_PRIORITY_OFFSET + 4]
            .try_into()
            .unwrap(),
    );
    (verdict, out)
}

/// Turns unique flows on and gives container 0 flow 3, container 1 flow 4.
fn with_unique_flows(ebpf: &mut Ebpf) {
    enable_unique_flows(ebpf, [(0, 3), (1, 4)]);
}

/// Makes test runs come from container `slot`'s veth.
fn send_as(ebpf: &mut Ebpf, slot: u32) {
    let mut veths: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut(VETH_CONTAINERS_MAP).unwrap()).unwrap();
    veths.insert(TEST_RUN_IFINDEX, slot, 0).unwrap();
}

#[test]
fn with_unique_flows_each_container_leaves_in_its_own_flow() {
    let mut ebpf = datapath();
    with_unique_flows(&mut ebpf);
    let from_c0 = udp4_out(30016, REMOTE_IPV4, 53);
    let from_c0_v6 = tcp6_out(31499, 443);
    let ping_from_c0 = v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &echo(8, 0x4242));
    // Whatever priority the container's socket asked for.
    for priority in [0, 6] {
        for f in [&from_c0, &from_c0_v6, &ping_from_c0] {
            assert_eq!(
                run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f, priority),
                (REDIRECT, FLOWS_QDISC | 3)
            );
        }
    }
    send_as(&mut ebpf, 1);
    let from_c1 = udp4_out(31500, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &from_c1, 0),
        (REDIRECT, FLOWS_QDISC | 4)
    );
    // What a container sends to the host or another container never reaches the
    // public interface and keeps its priority; so does what is dropped.
    let to_host = udp4_out(31500, HOST_IPV4, 22);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &to_host, 5),
        (REDIRECT, 5)
    );
    let not_owned = udp4_out(30016, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &not_owned, 0),
        (SHOT, 0)
    );
    // The public interface leaves a container's flow alone.
    assert_eq!(
        run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, &from_c1, FLOWS_QDISC | 4),
        (PIPE, FLOWS_QDISC | 4)
    );
}

#[test]
fn with_unique_flows_the_host_leaves_in_its_own_two_flows() {
    let mut ebpf = datapath();
    with_unique_flows(&mut ebpf);
    let host_udp = udp4_out(40000, REMOTE_IPV4, 53);
    let host_tcp6 = tcp6_out(40000, 443);
    let host_ping = v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &echo(8, 7));
    let host_ping6 = v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_ICMPV6, &echo(128, 7));
    // Any priority but a container flow of this qdisc: the socket's own, another
    // qdisc's, the host's flows.
    for priority in [0, 6, 0x0002_0005, FLOWS_QDISC | 2, FLOWS_QDISC | 1] {
        for (f, flow) in [
            (&host_udp, 1),
            (&host_tcp6, 1),
            (&host_ping, 2),
            (&host_ping6, 2),
            (&arp_request(), 2),
        ] {
            assert_eq!(
                run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, f, priority),
                (PIPE, FLOWS_QDISC | flow),
                "priority {priority:#x}"
            );
        }
    }
}

#[test]
fn without_unique_flows_priorities_are_left_alone() {
    let ebpf = datapath();
    let from_c0 = udp4_out(30016, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &from_c0, 6),
        (REDIRECT, 6)
    );
    for f in [&from_c0, &arp_request()] {
        assert_eq!(
            run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, f, 6),
            (PIPE, 6)
        );
    }
}
