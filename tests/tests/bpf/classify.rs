//! The tc programs run on crafted frames through BPF_PROG_TEST_RUN: every parse branch,
//! exact counters, exact verdicts. No interface is involved.
use aya::Ebpf;
use netiso::datapath::{EBPF_OBJECT, PublicIfaceCounters};
use netiso_common::{
    Direction, PUBLIC_EGRESS_PROGRAM, PUBLIC_INGRESS_PROGRAM, TrafficClass, TrafficCounters,
};
use netiso_tests::{
    packets::{self, ETH_P_ARP},
    test_run::load_programs,
};

use super::fixtures::run_repeated;

/// tc verdict "continue with the next program / the stack".
const TC_ACT_PIPE: u32 = 3;

fn load() -> Ebpf {
    // No pin paths: every test gets fresh, private maps.
    let mut ebpf = netiso::datapath::loader(netiso::datapath::DatapathLogLevel::Off)
        .load(EBPF_OBJECT)
        .expect("loading the eBPF object");
    load_programs(&mut ebpf, &[PUBLIC_INGRESS_PROGRAM, PUBLIC_EGRESS_PROGRAM]);
    ebpf
}

/// Every (direction, class) counter must be zero except `expected`.
fn assert_only(
    counters: &PublicIfaceCounters,
    expected: &[(Direction, TrafficClass, TrafficCounters)],
) {
    for direction in Direction::ALL {
        for class in TrafficClass::ALL {
            let want = expected
                .iter()
                .find(|(d, c, _)| *d == direction && *c == class)
                .map(|(_, _, counters)| *counters)
                .unwrap_or_default();
            assert_eq!(
                counters.get(direction, class),
                want,
                "{} {}",
                direction.name(),
                class.name()
            );
        }
    }
}

fn counted(packets: u64, frame: &[u8]) -> TrafficCounters {
    TrafficCounters {
        packets,
        bytes: packets * frame.len() as u64,
    }
}

/// Runs `frame` `repeat` times through each program and checks it lands in `class`,
/// in the right direction, with exact packet and byte counts.
fn check_classified(frame: &[u8], class: TrafficClass) {
    let ebpf = load();
    assert_eq!(
        run_repeated(&ebpf, PUBLIC_INGRESS_PROGRAM, frame, 7),
        TC_ACT_PIPE
    );
    assert_eq!(
        run_repeated(&ebpf, PUBLIC_EGRESS_PROGRAM, frame, 3),
        TC_ACT_PIPE
    );
    let counters = PublicIfaceCounters::read_loaded(&ebpf).expect("reading counters");
    assert_only(
        &counters,
        &[
            (Direction::Ingress, class, counted(7, frame)),
            (Direction::Egress, class, counted(3, frame)),
        ],
    );
}

#[test]
fn ipv4_tcp_is_counted_as_ipv4_tcp() {
    check_classified(&packets::ipv4_tcp_syn(40000, 31000), TrafficClass::Ipv4Tcp);
}

#[test]
fn ipv4_udp_is_counted_as_ipv4_udp() {
    check_classified(&packets::ipv4_udp(40000, 31000, 100), TrafficClass::Ipv4Udp);
}

#[test]
fn ipv4_icmp_is_counted_as_ipv4_icmp() {
    check_classified(&packets::ipv4_icmp_echo(7), TrafficClass::Ipv4Icmp);
}

#[test]
fn ipv4_without_ports_is_counted_as_ipv4_other() {
    check_classified(&packets::ipv4_gre(), TrafficClass::Ipv4Other);
}

#[test]
fn ipv6_tcp_is_counted_as_ipv6_tcp() {
    check_classified(&packets::ipv6_tcp_syn(40000, 31000), TrafficClass::Ipv6Tcp);
}

#[test]
fn ipv6_udp_is_counted_as_ipv6_udp() {
    check_classified(&packets::ipv6_udp(40000, 31000, 100), TrafficClass::Ipv6Udp);
}

#[test]
fn icmpv6_is_counted_as_ipv6_icmp() {
    check_classified(&packets::ipv6_icmp_echo(7), TrafficClass::Ipv6Icmp);
}

#[test]
fn ipv6_extension_header_is_counted_as_ipv6_other() {
    check_classified(
        &packets::ipv6_hop_by_hop_udp(40000, 31000),
        TrafficClass::Ipv6Other,
    );
}

#[test]
fn arp_is_counted_as_arp() {
    check_classified(&packets::arp_request(), TrafficClass::Arp);
}

#[test]
fn vlan_tagged_frame_is_counted_as_other() {
    check_classified(&packets::vlan_ipv4_udp(40000, 31000), TrafficClass::Other);
}

#[test]
fn frames_cut_after_the_ip_header_are_counted_by_their_ip_protocol() {
    // BPF_PROG_TEST_RUN itself rejects (EINVAL) IP frames shorter than an IP header, so
    // shorter frames can only be sent through a real interface (lab tests).
    let mut udp = packets::ipv4_udp(40000, 31000, 0);
    udp.truncate(packets::ETH_HLEN + 20 + 3);
    check_classified(&udp, TrafficClass::Ipv4Udp);
    let mut tcp = packets::ipv6_tcp_syn(40000, 31000);
    tcp.truncate(packets::ETH_HLEN + 40 + 1);
    check_classified(&tcp, TrafficClass::Ipv6Tcp);
}

#[test]
fn unknown_ethertype_is_counted_as_other() {
    check_classified(&packets::truncated(0x88cc), TrafficClass::Other);
}

#[test]
fn bare_arp_header_is_still_arp() {
    // Classification reads only the EtherType for ARP.
    check_classified(&packets::truncated(ETH_P_ARP), TrafficClass::Arp);
}

#[test]
fn counters_accumulate_across_frames_of_different_classes() {
    let ebpf = load();
    let udp = packets::ipv4_udp(1, 2, 10);
    let tcp = packets::ipv6_tcp_syn(3, 4);
    assert_eq!(
        run_repeated(&ebpf, PUBLIC_INGRESS_PROGRAM, &udp, 5),
        TC_ACT_PIPE
    );
    assert_eq!(
        run_repeated(&ebpf, PUBLIC_INGRESS_PROGRAM, &udp, 2),
        TC_ACT_PIPE
    );
    assert_eq!(
        run_repeated(&ebpf, PUBLIC_EGRESS_PROGRAM, &tcp, 4),
        TC_ACT_PIPE
    );
    let counters = PublicIfaceCounters::read_loaded(&ebpf).expect("reading counters");
    assert_only(
        &counters,
        &[
            (Direction::Ingress, TrafficClass::Ipv4Udp, counted(7, &udp)),
            (Direction::Egress, TrafficClass::Ipv6Tcp, counted(4, &tcp)),
        ],
    );
}
