//! What every steering test starts from: the programs loaded with private maps set
//! up as in the lab, and crafted frames.
pub(crate) use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(crate) use aya::{
    Ebpf,
    maps::{Array, HashMap, PerCpuArray},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
pub(crate) use netiso::datapath::{DatapathLogLevel, EBPF_OBJECT, loader, read_container_counters};
pub(crate) use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ECHO_IDS_MAP, CONTAINER_ETH0_INDEXES_MAP,
    CONTAINER_ETH0_INGRESS_PROGRAM, CONTAINER_LO_EGRESS_COPY_PROGRAM, CONTAINER_LO_EGRESS_PROGRAM,
    CONTAINER_NETKIT_PEER_PROGRAM, CONTAINER_NETNS_MAP, CONTAINER_PACKET_MARK,
    CONTAINER_SLOT_GLOBAL, CONTAINER_VETH_INGRESS_PROGRAM, ContainerCounters, ContainerLoopback,
    ECHO_OWNERS_MAP, EGRESS_POLICERS_MAP, EchoConversation, EchoIdRange, EchoKey, EgressPolicer,
    HOST_LO_INGRESS_PROGRAM, PORT_OWNERS_MAP, PUBLIC_EGRESS_PROGRAM, PUBLIC_INGRESS_PROGRAM,
    PUBLIC_MTU_GLOBAL, PortOwner, VETH_CONTAINERS_MAP,
};
pub(crate) use netiso_tests::{
    lab::{HOST_IPV4, HOST_IPV6, REMOTE_IPV4, REMOTE_IPV6},
    packets::{
        ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_GRE, IPPROTO_HOPOPTS, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, arp_request, echo, frame, icmp_error,
        internet_checksum, ipv4_fragment, ipv4_packet, ipv4_packet_full, ipv6_ext_header,
        ipv6_fragment, ipv6_packet, tcp_segment, udp_segment, with_macs,
    },
    test_run::{
        FLOWS_QDISC, configure_as_lab_host, enable_unique_flows, kernel_has_shared_loopback,
        load_programs,
    },
};

pub(crate) const PIPE: u32 = 3; // not ours: next program or the stack
pub(crate) const SHOT: u32 = 2; // dropped
pub(crate) const REDIRECT: u32 = 7; // steered (redirect, redirect_peer or redirect_neigh)

/// Containers' host-side veth ifindexes in the port table, but for the one test runs
/// come from (`send_as`), whose device is the test run's.
pub(crate) const C0_VETH: u32 = 101;
pub(crate) const C1_VETH: u32 = 102;

/// The ports containers own in these tests: the ports, the owner's slot and its veth.
const OWNED_PORTS: [(std::ops::RangeInclusive<u16>, u32, u32); 3] = [
    (31000..=31499, 0, C0_VETH),
    (30016..=30031, 0, C0_VETH),
    (31500..=32000, 1, C1_VETH),
];
/// BPF_PROG_TEST_RUN runs on the loopback device of the caller's namespace.
pub(crate) const TEST_RUN_IFINDEX: u32 = 1;
/// Container 0's eth0 ifindex, as its lo program finds it.
pub(crate) const C0_ETH0: u32 = 7;

pub(crate) const LOCALHOST4: Ipv4Addr = Ipv4Addr::LOCALHOST;
pub(crate) const LOCALHOST6: Ipv6Addr = Ipv6Addr::LOCALHOST;
pub(crate) const OTHER_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

/// Loads every program with private maps set up as in the lab: container 0 owns
/// 31000-31499 and 30016-30031, container 1 owns 31500-32000; test runs see
/// container 0's veth.
pub(crate) fn datapath() -> Ebpf {
    datapath_logging(DatapathLogLevel::Off)
}

/// [`datapath`] with the programs' logging at `level`.
pub(crate) fn datapath_logging(level: DatapathLogLevel) -> Ebpf {
    datapath_loaded(level, &0)
}

/// [`datapath`] told the public interface's MTU, as the agent tells it (the other
/// tests leave it unset: nothing is too long for them).
pub(crate) fn datapath_with_public_mtu(mtu: &'static u32) -> Ebpf {
    datapath_loaded(DatapathLogLevel::Off, mtu)
}

fn datapath_loaded(level: DatapathLogLevel, public_mtu: &'static u32) -> Ebpf {
    let mut ebpf = loader(level)
        .override_global(CONTAINER_SLOT_GLOBAL, &0u32, true)
        .override_global(PUBLIC_MTU_GLOBAL, public_mtu, true)
        .load(EBPF_OBJECT)
        .expect("loading the eBPF object");
    load_programs(
        &mut ebpf,
        &[
            PUBLIC_INGRESS_PROGRAM,
            CONTAINER_VETH_INGRESS_PROGRAM,
            CONTAINER_NETKIT_PEER_PROGRAM,
            PUBLIC_EGRESS_PROGRAM,
            HOST_LO_INGRESS_PROGRAM,
            CONTAINER_ETH0_INGRESS_PROGRAM,
            CONTAINER_LO_EGRESS_COPY_PROGRAM,
        ],
    );
    // The loopback program's copy finds container 0's eth0 here.
    let mut eth0s: Array<_, u32> =
        Array::try_from(ebpf.map_mut(CONTAINER_ETH0_INDEXES_MAP).unwrap()).unwrap();
    eth0s.set(0, C0_ETH0, 0).unwrap();
    if kernel_has_shared_loopback() {
        load_programs(&mut ebpf, &[CONTAINER_LO_EGRESS_PROGRAM]);
        // Test runs happen in this process's namespace: it plays container 0's.
        let cookie = netiso::net::netns::current_cookie().expect("this namespace's cookie");
        let mut namespaces: HashMap<_, u64, ContainerLoopback> =
            HashMap::try_from(ebpf.map_mut(CONTAINER_NETNS_MAP).unwrap()).unwrap();
        let container0 = ContainerLoopback {
            slot: 0,
            eth0_ifindex: C0_ETH0,
        };
        namespaces.insert(cookie, container0, 0).unwrap();
    }
    configure_as_lab_host(&mut ebpf);
    send_as(&mut ebpf, 0);
    // Container 0's echo requests leave with identifiers from its ephemeral range.
    let mut echo_ids: Array<_, EchoIdRange> =
        Array::try_from(ebpf.map_mut(CONTAINER_ECHO_IDS_MAP).unwrap()).unwrap();
    echo_ids
        .set(
            0,
            EchoIdRange {
                begin: 30016,
                len: 16,
            },
            0,
        )
        .unwrap();
    ebpf
}

/// The container loopback programs this kernel runs: the per-container copy, and the
/// shared one where the kernel takes it (both must decide alike).
pub(crate) fn container_lo_programs() -> Vec<&'static str> {
    let mut programs = vec![CONTAINER_LO_EGRESS_COPY_PROGRAM];
    if kernel_has_shared_loopback() {
        programs.push(CONTAINER_LO_EGRESS_PROGRAM);
    }
    programs
}

/// Runs `program` on `frame`: its verdict and the frame as the program left it.
pub(crate) fn run_out(ebpf: &Ebpf, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// Offset of `mark` in `struct __sk_buff` (include/uapi/linux/bpf.h).
pub(crate) const SKB_MARK_OFFSET: usize = 8;
/// Offset of `priority` in `struct __sk_buff`.
pub(crate) const SKB_PRIORITY_OFFSET: usize = 32;
/// At least `struct __sk_buff` (192 bytes on 6.1 and 6.18): the kernel refuses to
/// write the context back into less, and takes trailing zeros as input.
const SKB_CONTEXT_SIZE: usize = 256;

/// Runs `program` on `frame` arriving with the `u32` field of `struct __sk_buff` at
/// `offset` set to `value`; its verdict and the field's value as it leaves.
pub(crate) fn run_with_skb_field(
    ebpf: &Ebpf,
    program: &str,
    frame: &[u8],
    offset: usize,
    value: u32,
) -> (u32, u32) {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    let mut ctx_in = [0u8; SKB_CONTEXT_SIZE];
    ctx_in[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
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
    let out = u32::from_ne_bytes(ctx_out[offset..offset + 4].try_into().unwrap());
    (verdict, out)
}

/// The conversation the echo table has for (`remote`, `id`).
pub(crate) fn echo_conversation(ebpf: &Ebpf, remote: IpAddr, id: u16) -> Option<EchoConversation> {
    let echoes: HashMap<_, EchoKey, EchoConversation> =
        HashMap::try_from(ebpf.map(ECHO_OWNERS_MAP).unwrap()).unwrap();
    let mut key_remote = [0u8; 16];
    let ipv6 = match remote {
        IpAddr::V4(a) => {
            key_remote[..4].copy_from_slice(&a.octets());
            0
        }
        IpAddr::V6(a) => {
            key_remote = a.octets();
            1
        }
    };
    let key = EchoKey {
        remote: key_remote,
        id: id.to_be(),
        ipv6,
        _pad: 0,
    };
    echoes.get(&key, 0).ok()
}

pub(crate) fn run(ebpf: &Ebpf, program: &str, frame: &[u8]) -> u32 {
    run_repeated(ebpf, program, frame, 1)
}

/// [`run`] `repeat` times in one test run.
pub(crate) fn run_repeated(ebpf: &Ebpf, program: &str, frame: &[u8], repeat: u32) -> u32 {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

pub(crate) fn counters(ebpf: &Ebpf, slot: u32) -> ContainerCounters {
    read_container_counters(
        &PerCpuArray::try_from(ebpf.map(CONTAINER_COUNTERS_MAP).unwrap()).unwrap(),
        slot,
    )
    .unwrap()
}

pub(crate) fn rx(frames: &[&[u8]]) -> ContainerCounters {
    ContainerCounters {
        rx_packets: frames.len() as u64,
        rx_bytes: frames.iter().map(|f| f.len() as u64).sum(),
        ..Default::default()
    }
}

pub(crate) fn v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    frame(ETH_P_IP, &ipv4_packet(src, dst, protocol, l4))
}

pub(crate) fn v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    frame(ETH_P_IPV6, &ipv6_packet(src, dst, next, payload))
}

pub(crate) fn udp4_in(dport: u16) -> Vec<u8> {
    v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &udp_segment(40000, dport, 16),
    )
}

pub(crate) fn udp6_in(dport: u16) -> Vec<u8> {
    v6(
        REMOTE_IPV6,
        HOST_IPV6,
        IPPROTO_UDP,
        &udp_segment(40000, dport, 16),
    )
}

pub(crate) fn udp4_out(sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    v4(HOST_IPV4, dst, IPPROTO_UDP, &udp_segment(sport, dport, 16))
}

pub(crate) fn tcp6_out(sport: u16, dport: u16) -> Vec<u8> {
    v6(
        HOST_IPV6,
        REMOTE_IPV6,
        IPPROTO_TCP,
        &tcp_segment(sport, dport),
    )
}

/// Makes test runs come from container `slot`'s veth: the device table names it, and
/// so do its ports' owners (the datapath's short path for what containers send
/// trusts the port's owner only on the owner's own device).
pub(crate) fn send_as(ebpf: &mut Ebpf, slot: u32) {
    let mut veths: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut(VETH_CONTAINERS_MAP).unwrap()).unwrap();
    veths.insert(TEST_RUN_IFINDEX, slot, 0).unwrap();
    let mut owners: Array<_, PortOwner> =
        Array::try_from(ebpf.map_mut(PORT_OWNERS_MAP).unwrap()).unwrap();
    for (ports, owner, veth) in OWNED_PORTS {
        let device = if owner == slot {
            TEST_RUN_IFINDEX
        } else {
            veth
        };
        for port in ports {
            owners
                .set(u32::from(port), PortOwner::new(owner, device), 0)
                .unwrap();
        }
    }
}

/// Where the transport message of `frame` (IPv4 without options or IPv6 without
/// extension headers) starts, and the Internet checksum over it, with the
/// pseudo-header where its protocol has one (all but ICMPv4): 0 when the message's
/// checksum field is right; with the field zero, the value it must have.
pub(crate) fn l4_sum(frame: &[u8]) -> (usize, u16) {
    let ipv6 = frame[12..14] == [0x86, 0xdd];
    let (l4, protocol) = if ipv6 {
        (14 + 40, frame[14 + 6])
    } else {
        (14 + 20, frame[14 + 9])
    };
    let message = &frame[l4..];
    if !ipv6 && protocol == IPPROTO_ICMP {
        return (l4, internet_checksum(message));
    }
    let mut pseudo = if ipv6 {
        frame[14 + 8..14 + 40].to_vec()
    } else {
        frame[14 + 12..14 + 20].to_vec()
    };
    if ipv6 {
        pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
    } else {
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(message.len() as u16).to_be_bytes());
    }
    pseudo.extend_from_slice(message);
    (l4, internet_checksum(&pseudo))
}

/// Offset of the checksum field in a transport message of `protocol`.
pub(crate) fn checksum_field(protocol: u8) -> usize {
    match protocol {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    }
}

/// `frame` with its transport checksum set right.
pub(crate) fn with_l4_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ipv6 = frame[12..14] == [0x86, 0xdd];
    let protocol = if ipv6 { frame[14 + 6] } else { frame[14 + 9] };
    let (l4, _) = l4_sum(&frame);
    let field = l4 + checksum_field(protocol);
    frame[field..field + 2].copy_from_slice(&[0, 0]);
    let (_, sum) = l4_sum(&frame);
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    frame
}
