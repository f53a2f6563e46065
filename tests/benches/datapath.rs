//! Per-packet cost of the tc programs as the number of containers grows, measured by
//! the kernel through BPF_PROG_TEST_RUN (the average over many repetitions), net of
//! what an empty classifier costs in the same test run (the test run's own work per
//! repetition). The datapath's lookups do not depend on the number of containers, so
//! the figures should not either. Every container publishes its first port on port
//! 80 inside (translated). Run with `cargo xtask bench datapath`.
use aya::{
    Ebpf,
    maps::{Array, HashMap, RingBuf},
    programs::{SchedClassifier, TestRun as _, TestRunOptions},
};
use netiso::datapath::{DatapathLogLevel, EBPF_OBJECT, LOG_MAP, loader};
use netiso_common::{
    CONTAINER_ETH0_INDEXES_MAP, CONTAINER_LO_EGRESS_COPY_PROGRAM, CONTAINER_LO_EGRESS_PROGRAM,
    CONTAINER_NETNS_MAP, CONTAINER_PORT_TRANSLATIONS_MAP, CONTAINER_VETH_INGRESS_PROGRAM,
    ContainerLoopback, ContainerPort, EMPTY_CLASSIFIER_PROGRAM, FIRST_CONTAINER_EGRESS_FLOW,
    HOST_LO_INGRESS_PROGRAM, PORT_OWNERS_MAP, PORT_TRANSLATIONS_MAP, PUBLIC_EGRESS_PROGRAM,
    PUBLIC_INGRESS_PROGRAM, PortOwner, VETH_CONTAINERS_MAP,
};
use netiso_tests::{
    lab::{HOST_IPV4, REMOTE_IPV4},
    packets::{ETH_P_IP, IPPROTO_UDP, frame, ipv4_packet, udp_segment},
    test_run::{
        configure_as_lab_host, enable_unique_flows, kernel_has_shared_loopback, load_programs,
    },
};

const REPEAT: u32 = 200_000;
/// Translated packets change as they pass, and the kernel repeats a test run on the
/// same packet: they are measured one run at a time, averaged over this many.
const SINGLE_RUNS: u32 = 20_000;
/// The port inside every container that its first port is published on.
const INNER_PORT: u16 = 80;
// 4096 containers × 15 ports fit in the port space above 1024.
const PORTS_PER_CONTAINER: u32 = 15;
const FIRST_PORT: u32 = 1024;
/// BPF_PROG_TEST_RUN runs on the loopback device of the caller's namespace.
const TEST_RUN_IFINDEX: u32 = 1;

/// The datapath with `containers` containers; with `unique_flows`, each has its own
/// egress flow.
fn datapath(containers: u32, unique_flows: bool) -> Ebpf {
    datapath_logging(containers, unique_flows, DatapathLogLevel::Off)
}

/// [`datapath`] with the programs' logging at `level`.
fn datapath_logging(containers: u32, unique_flows: bool, level: DatapathLogLevel) -> Ebpf {
    let mut ebpf = loader(level)
        .load(EBPF_OBJECT)
        .expect("loading the eBPF object");
    load_programs(
        &mut ebpf,
        &[
            EMPTY_CLASSIFIER_PROGRAM,
            PUBLIC_INGRESS_PROGRAM,
            PUBLIC_EGRESS_PROGRAM,
            CONTAINER_VETH_INGRESS_PROGRAM,
            HOST_LO_INGRESS_PROGRAM,
            CONTAINER_LO_EGRESS_COPY_PROGRAM,
        ],
    );
    configure_as_lab_host(&mut ebpf);
    if unique_flows {
        enable_unique_flows(
            &mut ebpf,
            (0..containers).map(|slot| (slot, FIRST_CONTAINER_EGRESS_FLOW + slot)),
        );
    }
    // The measured container is the last one added, on the device test runs see; the
    // others fill the tables.
    let device_of = |slot: u32| {
        if slot == containers - 1 {
            TEST_RUN_IFINDEX
        } else {
            1000 + slot
        }
    };
    let mut owners: Array<_, PortOwner> =
        Array::try_from(ebpf.map_mut(PORT_OWNERS_MAP).unwrap()).unwrap();
    for slot in 0..containers {
        let first = FIRST_PORT + slot * PORTS_PER_CONTAINER;
        for port in first..first + PORTS_PER_CONTAINER {
            owners
                .set(port, PortOwner::new(slot, device_of(slot)), 0)
                .unwrap();
        }
    }
    let mut inbound: Array<_, u16> =
        Array::try_from(ebpf.map_mut(PORT_TRANSLATIONS_MAP).unwrap()).unwrap();
    for slot in 0..containers {
        inbound
            .set(FIRST_PORT + slot * PORTS_PER_CONTAINER, INNER_PORT, 0)
            .unwrap();
    }
    let mut outbound: HashMap<_, ContainerPort, u16> =
        HashMap::try_from(ebpf.map_mut(CONTAINER_PORT_TRANSLATIONS_MAP).unwrap()).unwrap();
    for slot in 0..containers {
        let key = ContainerPort {
            slot,
            port: INNER_PORT,
            _pad: 0,
        };
        let host_port = (FIRST_PORT + slot * PORTS_PER_CONTAINER) as u16;
        outbound.insert(key, host_port, 0).unwrap();
    }
    let mut veths: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut(VETH_CONTAINERS_MAP).unwrap()).unwrap();
    for slot in 0..containers {
        veths.insert(device_of(slot), slot, 0).unwrap();
    }
    // The container lo copy (its slot is 0 as loaded here) needs its eth0, or it
    // leaves every packet alone at once.
    let mut eth0s: Array<_, u32> =
        Array::try_from(ebpf.map_mut(CONTAINER_ETH0_INDEXES_MAP).unwrap()).unwrap();
    eth0s.set(0, TEST_RUN_IFINDEX, 0).unwrap();
    // The shared lo program finds a socketless packet's container by the initial
    // namespace's cookie (where this bench runs): make that slot 0's.
    if kernel_has_shared_loopback() {
        load_programs(&mut ebpf, &[CONTAINER_LO_EGRESS_PROGRAM]);
        let cookie = netiso::net::netns::current_cookie().expect("this namespace's cookie");
        let mut netns: HashMap<_, u64, ContainerLoopback> =
            HashMap::try_from(ebpf.map_mut(CONTAINER_NETNS_MAP).unwrap()).unwrap();
        let container = ContainerLoopback {
            slot: 0,
            eth0_ifindex: TEST_RUN_IFINDEX,
        };
        netns.insert(cookie, container, 0).unwrap();
    }
    ebpf
}

/// Runs of a batch whose log records fit aya-log's ring buffer (128 KiB).
const LOG_BATCH: u32 = 400;
const LOG_BATCHES: u32 = 50;

/// [`nanos_per_packet`] with the programs logging every packet: batches whose records
/// fit the log's ring buffer, drained between batches as the agent would.
fn nanos_logging(ebpf: &mut Ebpf, program: &str, frame: &[u8]) -> f64 {
    let mut total = 0.0;
    for _ in 0..LOG_BATCHES {
        let mut log = RingBuf::try_from(ebpf.map_mut(LOG_MAP).unwrap()).unwrap();
        while log.next().is_some() {}
        let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: LOG_BATCH,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        total += result.duration.as_nanos() as f64;
    }
    total / f64::from(LOG_BATCHES)
}

fn nanos_per_packet(ebpf: &Ebpf, program: &str, frame: &[u8]) -> f64 {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    // The kernel reports the average time of one repetition.
    result.duration.as_nanos() as f64
}

/// The average over [`SINGLE_RUNS`] runs of one repetition each, for programs that
/// change the packet.
fn nanos_one_at_a_time(ebpf: &Ebpf, program: &str, frame: &[u8]) -> f64 {
    let program: &SchedClassifier = ebpf.program(program).unwrap().try_into().unwrap();
    let total: u128 = (0..SINGLE_RUNS)
        .map(|_| {
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: 1,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            result.duration.as_nanos()
        })
        .sum();
    total as f64 / f64::from(SINGLE_RUNS)
}

fn udp4(src: std::net::Ipv4Addr, sport: u16, dst: std::net::Ipv4Addr, dport: u16) -> Vec<u8> {
    frame(
        ETH_P_IP,
        &ipv4_packet(src, dst, IPPROTO_UDP, &udp_segment(sport, dport, 64)),
    )
}

fn main() {
    println!(
        "per-packet cost through BPF_PROG_TEST_RUN, average of {REPEAT} runs, net of an empty classifier (ns)"
    );
    let columns = [
        "empty classifier",
        "inbound, owned port",
        "inbound, host port",
        "outbound, owned port",
        "+ unique flows",
        "host out",
        "+ unique flows",
        "host lo → container",
        "container lo (copy)",
        "container lo (shared)",
        "in, translated",
        "out, translated",
    ];
    println!(
        "{:>10}  {}",
        "containers",
        columns.map(|c| format!("{c:>20}")).join("  ")
    );
    println!(
        "(the empty classifier's own cost is raw; \"translated\" columns are single runs, averaged, each net of the same method on the untranslated packet in brackets)"
    );
    for containers in [1, 64, 1024, 4096] {
        let ebpf = datapath(containers, false);
        let with_flows = datapath(containers, true);
        let last_port = (FIRST_PORT + containers * PORTS_PER_CONTAINER - 1) as u16;
        let owned = udp4(REMOTE_IPV4, 40000, HOST_IPV4, last_port);
        let host = udp4(REMOTE_IPV4, 40000, HOST_IPV4, 22);
        let outbound = udp4(HOST_IPV4, last_port, REMOTE_IPV4, 53);
        let host_out = udp4(HOST_IPV4, 40000, REMOTE_IPV4, 53);
        let local = udp4(HOST_IPV4, 40000, HOST_IPV4, last_port);
        let first_port = (FIRST_PORT + (containers - 1) * PORTS_PER_CONTAINER) as u16;
        let translated_in = udp4(REMOTE_IPV4, 40000, HOST_IPV4, first_port);
        let translated_out = udp4(HOST_IPV4, INNER_PORT, REMOTE_IPV4, 53);
        let empty = nanos_per_packet(&ebpf, EMPTY_CLASSIFIER_PROGRAM, &owned);
        let net = |ebpf: &Ebpf, program: &str, frame: &[u8]| {
            format!("{:>20.0}", nanos_per_packet(ebpf, program, frame) - empty)
        };
        let empty_single = nanos_one_at_a_time(&ebpf, EMPTY_CLASSIFIER_PROGRAM, &owned);
        let single = |program: &str, translated: &[u8], plain: &[u8]| {
            format!(
                "{:>12.0} [{:>5.0}]",
                nanos_one_at_a_time(&ebpf, program, translated) - empty_single,
                nanos_one_at_a_time(&ebpf, program, plain) - empty_single
            )
        };
        let cells = [
            format!("{empty:>20.0}"),
            net(&ebpf, PUBLIC_INGRESS_PROGRAM, &owned),
            net(&ebpf, PUBLIC_INGRESS_PROGRAM, &host),
            net(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &outbound),
            net(&with_flows, CONTAINER_VETH_INGRESS_PROGRAM, &outbound),
            net(&ebpf, PUBLIC_EGRESS_PROGRAM, &host_out),
            net(&with_flows, PUBLIC_EGRESS_PROGRAM, &host_out),
            net(&ebpf, HOST_LO_INGRESS_PROGRAM, &local),
            net(&ebpf, CONTAINER_LO_EGRESS_COPY_PROGRAM, &local),
            if kernel_has_shared_loopback() {
                net(&ebpf, CONTAINER_LO_EGRESS_PROGRAM, &local)
            } else {
                format!("{:>20}", "(kernel < 6.15)")
            },
            single(PUBLIC_INGRESS_PROGRAM, &translated_in, &owned),
            single(CONTAINER_VETH_INGRESS_PROGRAM, &translated_out, &outbound),
        ];
        println!("{containers:>10}  {}", cells.join("  "));
    }
    // What --datapath-log=debug costs: the same packets with every decision logged.
    let mut logging = datapath_logging(1, false, DatapathLogLevel::Debug);
    let quiet = datapath(1, false);
    let owned = udp4(REMOTE_IPV4, 40000, HOST_IPV4, FIRST_PORT as u16);
    let outbound = udp4(HOST_IPV4, FIRST_PORT as u16, REMOTE_IPV4, 53);
    let mut extra = Vec::new();
    for (name, program, frame) in [
        ("inbound", PUBLIC_INGRESS_PROGRAM, &owned),
        ("outbound", CONTAINER_VETH_INGRESS_PROGRAM, &outbound),
    ] {
        let on = nanos_logging(&mut logging, program, frame);
        let off = nanos_per_packet(&quiet, program, frame);
        extra.push(format!("{name} +{:.0} ns", on - off));
    }
    println!(
        "with --datapath-log=debug (1 container; the log drained between batches of {LOG_BATCH}): {}",
        extra.join(", ")
    );
}
