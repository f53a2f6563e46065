//! Statistics from a real agent: `/monitor/statistics` (Mesos's JSON), `/metrics`
//! (Prometheus) and `netiso stats`, checked against traffic of known size.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket},
    process::Stdio,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, agent_http, cli, http_get},
    lab::{HOST_IPV4, HOST_IPV6, Lab, REMOTE_IPV4, REMOTE_IPV6, send_udp},
    netns::Netns,
    wait::wait_until,
};
use serde_json::Value;

pub(super) const ETH_HLEN: u64 = 14;
pub(super) const UDP_HLEN: u64 = 8;
pub(super) const IPV4_HLEN: u64 = 20;
pub(super) const IPV6_HLEN: u64 = 40;

/// Creates a container through the CLI and returns its namespace.
pub(super) fn create(lab: &Lab, name: &str, ports: &str, labels: &[&str]) -> Netns {
    let id = lab.container_id(name);
    let mut args = vec!["container", "create", &id, "--ports", ports];
    for label in labels {
        args.extend(["--label", label]);
    }
    let (ok, _, stderr) = cli(lab, &args);
    assert!(ok, "creating {id}: {stderr}");
    Netns::existing(&format!("netiso-{id}"))
}

/// The whole `/monitor/statistics` array.
pub(super) fn monitor(lab: &Lab) -> Vec<Value> {
    let answer = http_get(&lab.host, agent_http(), "/monitor/statistics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.content_type, "application/json");
    answer.json().as_array().expect("a JSON array").clone()
}

/// The `statistics` of container `name`.
pub(super) fn statistics_of(lab: &Lab, name: &str) -> Value {
    let id = lab.container_id(name);
    monitor(lab)
        .into_iter()
        .find(|e| e["executor_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no statistics for {id}"))["statistics"]
        .clone()
}

pub(super) fn number(statistics: &Value, pointer: &str) -> u64 {
    statistics
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {statistics}"))
}

/// A new container's eth0 announces its IPv6 address (multicast listener reports,
/// duplicate address detection) for about two seconds; those are its only packets of
/// its own. Waits until its counters have been still for a while.
pub(super) fn wait_until_quiet(lab: &Lab, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        let stats = statistics_of(lab, name);
        let now: Vec<u64> = ["/net_tx_packets", "/net_rx_packets"]
            .iter()
            .map(|p| number(&stats, p))
            .collect();
        let now = serde_json::json!(now);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(3) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("container {name} never stopped sending on its own");
}

/// Binds a UDP socket in `ns` that takes datagrams and never answers (so no ICMP
/// "port unreachable" comes back to count).
pub(super) fn udp_sink(ns: &Netns, addr: IpAddr, port: u16) -> UdpSocket {
    ns.run(|| UdpSocket::bind((addr, port)).expect("binding a UDP sink"))
}

pub(super) fn delta(after: &Value, before: &Value, pointer: &str) -> u64 {
    number(after, pointer) - number(before, pointer)
}

#[test]
fn link_and_datapath_counters_equal_known_traffic_seen_from_the_container() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = create(&lab, "web", "31000-31009", &[]);
    let _sinks = (
        udp_sink(&web, IpAddr::V4(HOST_IPV4), 31000),
        udp_sink(&web, IpAddr::V6(HOST_IPV6), 31001),
        udp_sink(&lab.remote, IpAddr::V4(REMOTE_IPV4), 9000),
        udp_sink(&lab.remote, IpAddr::V6(REMOTE_IPV6), 9001),
    );
    wait_until_quiet(&lab, "web");
    let before = statistics_of(&lab, "web");
    // In: 10 + 5 datagrams from the remote host. Out: 7 + 3 from the container.
    send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 10, 100);
    send_udp(&lab.remote, (HOST_IPV6, 31001).into(), 5, 60);
    send_udp(&web, (REMOTE_IPV4, 9000).into(), 7, 50);
    send_udp(&web, (REMOTE_IPV6, 9001).into(), 3, 30);
    let rx_packets = 15;
    let rx_bytes =
        10 * (ETH_HLEN + IPV4_HLEN + UDP_HLEN + 100) + 5 * (ETH_HLEN + IPV6_HLEN + UDP_HLEN + 60);
    let tx_packets = 10;
    let tx_bytes =
        7 * (ETH_HLEN + IPV4_HLEN + UDP_HLEN + 50) + 3 * (ETH_HLEN + IPV6_HLEN + UDP_HLEN + 30);
    let mut after = Value::Null;
    // The datagrams are through once the datapath has counted them all.
    wait_until(
        "the datagrams to be counted",
        Duration::from_secs(10),
        || {
            after = statistics_of(&lab, "web");
            delta(&after, &before, "/netiso_datapath_statistics/rx_packets") >= rx_packets
                && delta(&after, &before, "/netiso_datapath_statistics/tx_packets") >= tx_packets
        },
    );
    let link = [
        ("/net_rx_packets", rx_packets),
        ("/net_rx_bytes", rx_bytes),
        ("/net_tx_packets", tx_packets),
        ("/net_tx_bytes", tx_bytes),
        ("/net_rx_errors", 0),
        ("/net_rx_dropped", 0),
        ("/net_tx_errors", 0),
        ("/net_tx_dropped", 0),
        ("/netiso_datapath_statistics/rx_packets", rx_packets),
        ("/netiso_datapath_statistics/rx_bytes", rx_bytes),
        ("/netiso_datapath_statistics/tx_packets", tx_packets),
        ("/netiso_datapath_statistics/tx_bytes", tx_bytes),
        ("/netiso_datapath_statistics/tx_dropped_port_not_owned", 0),
    ];
    for (pointer, expected) in link {
        assert_eq!(
            delta(&after, &before, pointer),
            expected,
            "{pointer}: before {before}, after {after}"
        );
    }
    assert_eq!(
        after["net_ephemeral_ports"],
        serde_json::json!({"begin": 30016, "end": 30031})
    );
}

#[test]
fn datapath_drops_are_counted_by_reason_while_the_link_counts_them_sent() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = create(&lab, "web", "31000-31009", &[]);
    let _sink = udp_sink(&lab.remote, IpAddr::V4(REMOTE_IPV4), 9000);
    wait_until_quiet(&lab, "web");
    let before = statistics_of(&lab, "web");
    // Port 31500 is not the container's: the datapath drops all four.
    web.run(|| {
        let socket = UdpSocket::bind((HOST_IPV4, 31500)).expect("bind");
        for _ in 0..4 {
            socket.send_to(b"nope", (REMOTE_IPV4, 9000)).expect("send");
        }
    });
    let mut after = Value::Null;
    wait_until(
        "the four drops to be counted",
        Duration::from_secs(10),
        || {
            after = statistics_of(&lab, "web");
            delta(
                &after,
                &before,
                "/netiso_datapath_statistics/tx_dropped_port_not_owned",
            ) >= 4
        },
    );
    assert_eq!(
        delta(
            &after,
            &before,
            "/netiso_datapath_statistics/tx_dropped_port_not_owned"
        ),
        4
    );
    assert_eq!(
        delta(&after, &before, "/netiso_datapath_statistics/tx_packets"),
        0
    );
    // The container did send them: its link counted them (on a veth and on netkit).
    assert_eq!(delta(&after, &before, "/net_tx_packets"), 4);
    assert_eq!(delta(&after, &before, "/net_tx_dropped"), 0);
}

/// Adds a qdisc (or class) with `tc` in `ns`; returns whether the kernel took it.
pub(super) fn tc(ns: &Netns, args: &[&str]) -> bool {
    ns.command("tc")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("running tc")
        .success()
}

fn qdisc_ids(statistics: &Value) -> BTreeSet<String> {
    statistics["net_traffic_control_statistics"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|q| q["id"].as_str().expect("id").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn traffic_control_entries_exist_exactly_when_their_qdiscs_do() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = create(&lab, "web", "31000-31009", &[]);
    let stats = statistics_of(&lab, "web");
    assert!(
        stats.get("net_traffic_control_statistics").is_none(),
        "no qdisc yet, so no entry: {stats}"
    );
    // Egress shaping on the container's eth0, as Mesos builds it.
    assert!(tc(
        &web,
        &[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"
        ]
    ));
    assert!(tc(
        &web,
        &[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate",
            "100mbit"
        ]
    ));
    let fq_codel = tc(
        &web,
        &[
            "qdisc", "add", "dev", "eth0", "parent", "1:1", "handle", "2:", "fq_codel",
        ],
    );
    // Ingress shaping on the host end of the veth.
    assert!(tc(
        &lab.host,
        &[
            "qdisc", "add", "dev", "netiso0", "root", "handle", "1:", "htb", "default", "1"
        ]
    ));
    let mut expected: BTreeSet<String> = ["bw_limit", "ingress_bw_limit"].map(String::from).into();
    if fq_codel {
        expected.insert("bloat_reduction".into());
    }
    let _sink = udp_sink(&lab.remote, IpAddr::V4(REMOTE_IPV4), 9000);
    send_udp(&web, (REMOTE_IPV4, 9000).into(), 20, 100);
    let stats = statistics_of(&lab, "web");
    assert_eq!(qdisc_ids(&stats), expected, "{stats}");
    let entries = stats["net_traffic_control_statistics"].as_array().unwrap();
    let keys: BTreeSet<&str> = entries[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "backlog",
            "bytes",
            "drops",
            "id",
            "overlimits",
            "packets",
            "qlen",
            "ratebps",
            "ratepps",
            "requeues"
        ]
        .into()
    );
    let bw_limit = entries.iter().find(|q| q["id"] == "bw_limit").unwrap();
    // The htb saw the 20 datagrams (and possibly the container's own announcements).
    assert!(number(bw_limit, "/packets") >= 20, "{bw_limit}");
    assert!(number(bw_limit, "/bytes") >= 20 * (ETH_HLEN + IPV4_HLEN + UDP_HLEN + 100));
    if fq_codel {
        let bloat = entries
            .iter()
            .find(|q| q["id"] == "bloat_reduction")
            .unwrap();
        assert!(number(bloat, "/packets") >= 20, "{bloat}");
    }
    // Gone with their qdiscs.
    assert!(tc(&web, &["qdisc", "del", "dev", "eth0", "root"]));
    let stats = statistics_of(&lab, "web");
    assert_eq!(
        qdisc_ids(&stats),
        ["ingress_bw_limit".to_owned()].into(),
        "{stats}"
    );
    assert!(tc(&lab.host, &["qdisc", "del", "dev", "netiso0", "root"]));
    let stats = statistics_of(&lab, "web");
    assert!(
        stats.get("net_traffic_control_statistics").is_none(),
        "{stats}"
    );
}

#[test]
fn socket_and_snmp_statistics_reflect_known_connections_when_enabled() {
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--network_enable_socket_statistics_summary",
            "--network_enable_socket_statistics_details",
            "--network_enable_snmp_statistics",
        ],
    );
    let web = create(&lab, "web", "31000-31009", &[]);
    // The container has a TCP socket table of its own (not a share of the host's), so
    // the RTT dump walks its sockets only; the host's setting is left as it was.
    // (Kernels before 6.1 have no per-namespace tables: every namespace shares the
    // host's, and there is nothing to set.)
    if std::path::Path::new("/proc/sys/net/ipv4/tcp_child_ehash_entries").exists() {
        let own_table = web.exec(&["cat", "/proc/sys/net/ipv4/tcp_ehash_entries"]);
        assert_eq!(String::from_utf8_lossy(&own_table.stdout).trim(), "1024");
        let host_setting = lab
            .host
            .exec(&["cat", "/proc/sys/net/ipv4/tcp_child_ehash_entries"]);
        assert_eq!(String::from_utf8_lossy(&host_setting.stdout).trim(), "0");
    }
    let listener = web.run(|| TcpListener::bind((Ipv6Addr::UNSPECIFIED, 31000)).expect("listen"));
    let stats = statistics_of(&lab, "web");
    assert_eq!(
        stats["net_tcp_active_connections"], 1.0,
        "the listener: {stats}"
    );
    assert_eq!(stats["net_tcp_time_wait_connections"], 0.0);
    assert!(
        stats.get("net_tcp_rtt_microsecs_p50").is_none(),
        "no RTT yet: {stats}"
    );
    // Three connections from the remote host, one over IPv6.
    let remote_ends: Vec<TcpStream> = lab.remote.run(|| {
        [
            IpAddr::V4(HOST_IPV4),
            IpAddr::V4(HOST_IPV4),
            IpAddr::V6(HOST_IPV6),
        ]
        .into_iter()
        .map(|ip| TcpStream::connect((ip, 31000)).expect("connect"))
        .collect()
    });
    let container_ends: Vec<TcpStream> = (0..3)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    let stats = statistics_of(&lab, "web");
    // The listener (both families) and three accepted connections.
    assert_eq!(stats["net_tcp_active_connections"], 4.0, "{stats}");
    for p in ["p50", "p90", "p95", "p99"] {
        let rtt = stats[format!("net_tcp_rtt_microsecs_{p}")]
            .as_f64()
            .unwrap_or(0.0);
        assert!(rtt > 0.0 && rtt < 1e6, "RTT {p} = {rtt}: {stats}");
    }
    assert_eq!(stats["net_snmp_statistics"]["tcp_stats"]["PassiveOpens"], 3);
    assert_eq!(stats["net_snmp_statistics"]["tcp_stats"]["CurrEstab"], 3);
    for (section, key) in [
        ("ip_stats", "Forwarding"),
        ("icmp_stats", "InMsgs"),
        ("tcp_stats", "RetransSegs"),
        ("udp_stats", "InDatagrams"),
    ] {
        assert!(
            stats["net_snmp_statistics"][section][key].is_i64(),
            "{section}.{key}: {stats}"
        );
    }
    // The container closes two connections first: they wait in TIME_WAIT there.
    let mut container_ends = container_ends.into_iter();
    drop((container_ends.next(), container_ends.next()));
    drop(remote_ends);
    let mut stats = Value::Null;
    wait_until(
        "two connections in TIME_WAIT",
        Duration::from_secs(10),
        || {
            stats = statistics_of(&lab, "web");
            stats["net_tcp_time_wait_connections"] == 2.0
        },
    );
    // The listener and the connection still open (closed by the remote only).
    assert_eq!(stats["net_tcp_active_connections"], 2.0, "{stats}");
}

#[test]
fn optional_statistics_are_absent_unless_enabled() {
    if netiso_tests::skipped_in_vm("flag handling does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = create(&lab, "web", "31000-31009", &[]);
    let _listener = web.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 31000)).expect("listen"));
    let stats = statistics_of(&lab, "web");
    for key in [
        "net_tcp_active_connections",
        "net_tcp_time_wait_connections",
        "net_tcp_rtt_microsecs_p50",
        "net_snmp_statistics",
        "net_rate_statistics",
        "net_tx_rate_limit",
        "net_rx_rate_limit",
    ] {
        assert!(stats.get(key).is_none(), "{key} present: {stats}");
    }
}

#[test]
fn rate_statistics_sample_in_the_background() {
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--network_enable_rate_statistics",
            "--network_rate_statistics_window=2secs",
            "--network_rate_statistics_interval=100ms",
        ],
    );
    let web = create(&lab, "web", "31000-31009", &[]);
    let _sink = udp_sink(&web, IpAddr::V4(HOST_IPV4), 31000);
    // Half a second of steady traffic into the container.
    for _ in 0..10 {
        send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 20, 1000);
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = statistics_of(&lab, "web");
    let rates = &stats["net_rate_statistics"];
    assert_eq!(rates["sampling_window_secs"], 2.0, "{stats}");
    assert_eq!(rates["sampling_interval_secs"], 0.1);
    let rx = &rates["rx_rate"];
    let samples = number(rx, "/samples");
    // 2 s window at 100 ms: at most 20 samples.
    assert!((2..=20).contains(&samples), "{rx}");
    assert!(rx["max"].as_f64().unwrap() > 1000.0, "{rx}");
    for key in [
        "min", "max", "p50", "p90", "p95", "p99", "p999", "p9999", "samples",
    ] {
        assert!(rx.get(key).is_some(), "{key} missing: {rx}");
    }
    for rate in [
        "rx_packet_rate",
        "rx_drop_rate",
        "rx_error_rate",
        "tx_rate",
        "tx_packet_rate",
        "tx_drop_rate",
        "tx_error_rate",
    ] {
        assert!(rates.get(rate).is_some(), "{rate} missing: {rates}");
    }
}
