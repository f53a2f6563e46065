//! The first vertical slice on a real kernel: the agent loads and attaches the datapath
//! to the lab's public interface, pins its counters, and they count real packets exactly.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    time::Duration,
};

use netiso::datapath::{AttachMode, PublicIfaceCounters};
use netiso_common::{
    Direction, PUBLIC_IFACE_COUNTERS_MAP, TrafficClass, TrafficCounters, public_iface_counter_slot,
};
use netiso_tests::{
    agent::{Agent, LAB_RESOURCES, http_get, run_netiso},
    lab::{HOST_IPV4, HOST_IPV6, Lab, PUBLIC_IFACE, REMOTE_IPV4, REMOTE_IPV6, send_udp},
    netns::run_checked,
    wait::wait_until,
};

const PAYLOAD: usize = 64;
const UDP_HLEN: u64 = 8;
const IPV4_HLEN: u64 = 20;
const IPV6_HLEN: u64 = 40;
const ETH_HLEN: u64 = 14;
/// A port nothing listens on: the datagrams are counted, then dropped by the stack.
const DISCARD_PORT: u16 = 9;

fn counters(lab: &Lab) -> PublicIfaceCounters {
    PublicIfaceCounters::read_pinned(&lab.pin_root().join(PUBLIC_IFACE_COUNTERS_MAP))
        .expect("reading the pinned counter map")
}

/// Resolves neighbours both ways first, so no datagram waits in an ARP/NDP queue.
fn resolve_neighbours(lab: &Lab) {
    for dst in [HOST_IPV4.to_string(), HOST_IPV6.to_string()] {
        lab.remote.exec(&["ping", "-c", "1", "-W", "5", &dst]);
    }
}

/// Waits until `class` in `direction` reaches `packets` packets, then checks the
/// counters are exactly `packets` frames of `frame_len` bytes.
fn expect_exact(
    lab: &Lab,
    direction: Direction,
    class: TrafficClass,
    packets: u64,
    frame_len: u64,
) {
    wait_until(
        &format!("{packets} {} {} packets", direction.name(), class.name()),
        Duration::from_secs(20),
        || counters(lab).get(direction, class).packets >= packets,
    );
    assert_eq!(
        counters(lab).get(direction, class),
        TrafficCounters {
            packets,
            bytes: packets * frame_len,
        },
        "{} {}",
        direction.name(),
        class.name()
    );
}

fn udp_frame_len(ip: IpAddr) -> u64 {
    let ip_hlen = if ip.is_ipv4() { IPV4_HLEN } else { IPV6_HLEN };
    ETH_HLEN + ip_hlen + UDP_HLEN + PAYLOAD as u64
}

#[test]
fn udp_from_remote_is_counted_exactly_in_the_pinned_map() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    resolve_neighbours(&lab);
    for (dst, class, count) in [
        (IpAddr::V4(HOST_IPV4), TrafficClass::Ipv4Udp, 100),
        (IpAddr::V6(HOST_IPV6), TrafficClass::Ipv6Udp, 37),
    ] {
        send_udp(
            &lab.remote,
            SocketAddr::new(dst, DISCARD_PORT),
            count,
            PAYLOAD,
        );
        expect_exact(
            &lab,
            Direction::Ingress,
            class,
            count as u64,
            udp_frame_len(dst),
        );
    }
    // Nothing was counted in the wrong direction.
    assert_eq!(
        counters(&lab)
            .get(Direction::Egress, TrafficClass::Ipv4Udp)
            .packets,
        0
    );
    assert_eq!(
        counters(&lab)
            .get(Direction::Egress, TrafficClass::Ipv6Udp)
            .packets,
        0
    );
}

#[test]
fn udp_from_host_is_counted_as_egress() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    resolve_neighbours(&lab);
    for (dst, class, count) in [
        (IpAddr::V4(REMOTE_IPV4), TrafficClass::Ipv4Udp, 50),
        (IpAddr::V6(REMOTE_IPV6), TrafficClass::Ipv6Udp, 21),
    ] {
        send_udp(
            &lab.host,
            SocketAddr::new(dst, DISCARD_PORT),
            count,
            PAYLOAD,
        );
        expect_exact(
            &lab,
            Direction::Egress,
            class,
            count as u64,
            udp_frame_len(dst),
        );
    }
    assert_eq!(
        counters(&lab)
            .get(Direction::Ingress, TrafficClass::Ipv4Udp)
            .packets,
        0
    );
}

#[test]
fn bpftool_dump_shows_field_names_and_the_same_counts() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    resolve_neighbours(&lab);
    send_udp(
        &lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), DISCARD_PORT),
        25,
        PAYLOAD,
    );
    expect_exact(
        &lab,
        Direction::Ingress,
        TrafficClass::Ipv4Udp,
        25,
        udp_frame_len(IpAddr::V4(HOST_IPV4)),
    );
    let pin = lab.pin_root().join(PUBLIC_IFACE_COUNTERS_MAP);
    let output = run_checked(
        Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&pin),
    );
    // Without -j, bpftool prints BTF-typed maps as JSON with the struct's field names.
    let dump: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("bpftool output is JSON");
    let slot = public_iface_counter_slot(Direction::Ingress, TrafficClass::Ipv4Udp);
    let entry = dump
        .as_array()
        .expect("an array of entries")
        .iter()
        .find(|e| e["key"] == slot)
        .unwrap_or_else(|| panic!("no key {slot} in bpftool output: {dump}"));
    let field_sum = |field: &str| -> u64 {
        entry["values"]
            .as_array()
            .expect("per-CPU values")
            .iter()
            .map(|v| {
                v["value"][field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no field {field:?} in {v}"))
            })
            .sum()
    };
    assert_eq!(field_sum("packets"), 25);
    assert_eq!(
        field_sum("bytes"),
        25 * udp_frame_len(IpAddr::V4(HOST_IPV4))
    );
}

#[test]
fn health_reports_the_attachment_and_it_is_really_there() {
    let lab = Lab::new();
    let listen: SocketAddr = "127.0.0.1:5051".parse().unwrap();
    let _agent = Agent::start(&lab, &["--listen", &listen.to_string()]);
    let answer = http_get(&lab.host, listen, "/health");
    let (status, health) = (answer.status, answer.json());
    assert_eq!(status, 200);
    let mode = AttachMode::for_running_kernel();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["public_interface"], PUBLIC_IFACE);
    assert_eq!(health["attach_mode"], serde_json::to_value(mode).unwrap());
    if mode == AttachMode::Netlink {
        // The netlink path leaves visible cls_bpf filters on a clsact qdisc.
        for direction in ["ingress", "egress"] {
            let filters = lab
                .host
                .exec(&["tc", "filter", "show", "dev", PUBLIC_IFACE, direction]);
            let filters = String::from_utf8_lossy(&filters.stdout);
            assert_eq!(
                filters
                    .lines()
                    .filter(|l| l.contains(&format!("name public_{direction}")))
                    .count(),
                1,
                "one netiso filter on {direction}: {filters}"
            );
        }
    }
    let status = http_get(&lab.host, listen, "/no/such/thing").status;
    assert_eq!(status, 404);
}

#[test]
fn restarted_agent_keeps_counting_from_the_pinned_totals() {
    let lab = Lab::new();
    resolve_neighbours(&lab);
    let dst = SocketAddr::new(IpAddr::V4(HOST_IPV4), DISCARD_PORT);
    let frame_len = udp_frame_len(dst.ip());
    let agent = Agent::start(&lab, &[]);
    send_udp(&lab.remote, dst, 10, PAYLOAD);
    expect_exact(
        &lab,
        Direction::Ingress,
        TrafficClass::Ipv4Udp,
        10,
        frame_len,
    );
    // SIGKILL: no clean-up code runs. The netlink path leaves its filters behind; the
    // new agent must replace them rather than count every packet twice.
    drop(agent);
    let _agent = Agent::start(&lab, &[]);
    send_udp(&lab.remote, dst, 10, PAYLOAD);
    expect_exact(
        &lab,
        Direction::Ingress,
        TrafficClass::Ipv4Udp,
        20,
        frame_len,
    );
}

#[test]
fn agent_refuses_a_missing_interface_with_one_clear_line() {
    let lab = Lab::new();
    let pin_root = lab.pin_root().display().to_string();
    let (ok, _, stderr) = run_netiso(
        &lab.host,
        &[
            "agent",
            "--eth0-name",
            "nosuch0",
            "--bpffs-root",
            &pin_root,
            "--resources",
            LAB_RESOURCES,
            "--ephemeral_ports_per_container=16",
            "--api-socket",
            &lab.api_socket().display().to_string(),
        ],
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: interface nosuch0 does not exist in this network namespace; pass the right one with --eth0_name (see `ip link`)"
    );
    assert!(
        !lab.pin_root().exists(),
        "nothing pinned after a refused start"
    );
}

#[test]
fn agent_refuses_a_pin_directory_outside_bpffs() {
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("netiso-not-bpffs-{}", lab.id));
    let dir_text = dir.display().to_string();
    let (ok, _, stderr) = run_netiso(
        &lab.host,
        &[
            "agent",
            "--eth0-name",
            PUBLIC_IFACE,
            "--bpffs-root",
            &dir_text,
            "--resources",
            LAB_RESOURCES,
            "--ephemeral_ports_per_container=16",
            "--api-socket",
            &lab.api_socket().display().to_string(),
        ],
    );
    assert!(!ok);
    assert!(
        !lab.api_socket().exists(),
        "a refused agent leaves no socket"
    );
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "netiso: error: {dir_text} is not on a BPF filesystem; choose a --bpffs-root under a bpffs mount such as /sys/fs/bpf"
        )
    );
    assert!(!Path::new(&dir).exists(), "the directory was not created");
}

#[test]
fn datapath_keeps_counting_while_the_agent_is_down_and_after_restarts() {
    let lab = Lab::new();
    resolve_neighbours(&lab);
    let dst = SocketAddr::new(IpAddr::V4(HOST_IPV4), DISCARD_PORT);
    let frame_len = udp_frame_len(dst.ip());
    let mut expected = 0;
    let mut send_and_check = |what: &str| {
        send_udp(&lab.remote, dst, 10, PAYLOAD);
        expected += 10;
        eprintln!("{what}: expecting {expected}");
        expect_exact(
            &lab,
            Direction::Ingress,
            TrafficClass::Ipv4Udp,
            expected,
            frame_len,
        );
    };
    let agent = Agent::start(&lab, &[]);
    send_and_check("agent running");
    assert!(agent.stop(), "the agent exits cleanly on SIGTERM");
    send_and_check("after SIGTERM, no agent");
    let agent = Agent::start(&lab, &[]);
    send_and_check("restarted");
    agent.kill();
    send_and_check("after SIGKILL, no agent");
    let _agent = Agent::start(&lab, &[]);
    // Exactly one attachment per direction: the restarts replaced, never added.
    send_and_check("restarted again");
}

#[test]
fn the_mesos_documentation_command_line_starts_an_agent() {
    let lab = Lab::new();
    // As the Mesos documentation asks: move the host's own ephemeral range out of the
    // way of the containers' (32768-57344).
    lab.host
        .exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=57345 60999"]);
    let pin_root = lab.pin_root().display().to_string();
    let listen = "127.0.0.1:5051";
    let mut args = vec![
        "agent",
        "--isolation=network/port_mapping",
        "--resources=ports:[31000-32000];ephemeral_ports:[32768-57344]",
        "--ephemeral_ports_per_container=1024",
        "--egress_rate_limit_per_container=37500KB",
        "--egress_unique_flow_per_container",
        "--bpffs-root",
        &pin_root,
    ];
    let paths = lab.agent_paths();
    args.extend(paths.iter().map(String::as_str));
    let agent = Agent::start_with_args(&lab.host, &args);
    // No --eth0_name: the interface of the default route, as Mesos picks it.
    let answer = http_get(&lab.host, listen.parse().unwrap(), "/health");
    let (status, health) = (answer.status, answer.json());
    assert_eq!(status, 200);
    assert_eq!(health["public_interface"], PUBLIC_IFACE);
    // Unique flows are applied where the kernel has fq_codel and announced as not
    // applied where it has not; either way the agent runs.
    let log = agent.log();
    assert!(
        log.contains("unique egress flows: fq_codel 1: on eth0")
            || log.contains("--egress_unique_flow_per_container is not applied"),
        "{log}"
    );
    assert!(agent.stop());
}

#[test]
fn agent_refuses_ephemeral_ports_the_host_uses_with_one_clear_line() {
    let lab = Lab::new();
    let pin_root = lab.pin_root().display().to_string();
    // The lab host keeps Linux's default ip_local_port_range, 32768-60999.
    let (ok, _, stderr) = run_netiso(
        &lab.host,
        &[
            "agent",
            "--resources=ports:[31000-32000];ephemeral_ports:[32768-57344]",
            "--bpffs-root",
            &pin_root,
            "--api-socket",
            &lab.api_socket().display().to_string(),
        ],
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: The specified ephemeral ports [32768-57344] intersect with the ephemeral ports used by the host [32768-60999]; move the host's range (sysctl net.ipv4.ip_local_port_range) or the ports in --resources"
    );
    assert!(
        !lab.pin_root().exists(),
        "nothing made after a refused start"
    );
}
