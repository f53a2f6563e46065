//! Rate limits from a real agent: Mesos's tests 10-17 (small egress and ingress limits
//! timed with real transfers, rates per CPU following `container update --cpus`,
//! 64-bit rates, the upgrade sequence across agent restarts), read back from the
//! kernel with `tc`, plus an iperf3 stream under a 10 Mbit/s limit; unique egress
//! flows seen where packets arrive.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, agent_http, cli, http_get},
    lab::{
        HOST_IPV4, HOST_IPV6, Lab, REMOTE_IPV4, send_tcp, start_iperf3_server, start_tcp_listener,
    },
    netns::Netns,
};
use serde_json::Value;

pub(super) const TRANSFER: usize = 20 * 1024;

pub(super) fn create(lab: &Lab, name: &str, extra: &[&str]) -> (Netns, Value) {
    let id = lab.container_id(name);
    let mut args = vec!["container", "create", &id, "--ports", "31000-31009"];
    args.extend_from_slice(extra);
    let (ok, info, stderr) = cli(lab, &args);
    assert!(ok, "creating {id}: {stderr}");
    (Netns::existing(&format!("netiso-{id}")), info)
}

pub(super) fn update_cpus(lab: &Lab, name: &str, cpus: &str) -> Value {
    let id = lab.container_id(name);
    let (ok, info, stderr) = cli(lab, &["container", "update", &id, "--cpus", cpus]);
    assert!(ok, "updating {id}: {stderr}");
    info
}

/// `rate` and `ceil` of htb class 1:1 on `dev`, in bytes/s, as the kernel reports them
/// through `tc` (which prints exact values: it only shortens to a unit that divides).
pub(super) fn htb_class(ns: &Netns, dev: &str) -> Option<(u64, u64)> {
    let output = ns.exec(&["tc", "class", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("class htb 1:1 "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |name: &str| {
        let i = words.iter().position(|w| *w == name)?;
        Some(bits_to_bytes(words[i + 1]))
    };
    Some((value("rate")?, value("ceil")?))
}

pub(super) fn bits_to_bytes(text: &str) -> u64 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().unwrap_or_else(|_| panic!("rate {text}"));
    let scale = match &text[digits.len()..] {
        "bit" => 1,
        "Kbit" => 1_000,
        "Mbit" => 1_000_000,
        "Gbit" => 1_000_000_000,
        "Tbit" => 1_000_000_000_000,
        unit => panic!("unknown unit {unit} in {text}"),
    };
    number * scale / 8
}

pub(super) fn rate(ns: &Netns, dev: &str) -> Option<u64> {
    htb_class(ns, dev).map(|(rate, _)| rate)
}

/// The kinds of the qdiscs on `dev`, but for clsact (where the datapath's programs
/// hang on kernels without tcx).
pub(super) fn qdisc_kinds(ns: &Netns, dev: &str) -> Vec<String> {
    let output = ns.exec(&["tc", "-j", "qdisc", "show", "dev", dev]);
    let all: Value = serde_json::from_slice(&output.stdout).expect("tc -j qdisc JSON");
    all.as_array()
        .unwrap()
        .iter()
        .map(|q| q["kind"].as_str().unwrap().to_owned())
        .filter(|kind| kind != "clsact")
        .collect()
}

/// Whether the kernel has fq_codel (the host kernel here has not; the VM's has).
pub(super) fn kernel_has_fq_codel(lab: &Lab) -> bool {
    let added = lab
        .remote
        .command("tc")
        .args([
            "qdisc", "add", "dev", "lo", "root", "handle", "9:", "fq_codel",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if added {
        lab.remote
            .exec(&["tc", "qdisc", "del", "dev", "lo", "root"]);
    }
    added
}

pub(super) fn statistics(lab: &Lab, name: &str) -> Value {
    let id = lab.container_id(name);
    let all = http_get(&lab.host, agent_http(), "/monitor/statistics").json();
    all.as_array()
        .unwrap()
        .iter()
        .find(|e| e["executor_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no statistics for {id}"))["statistics"]
        .clone()
}

/// Sends `TRANSFER` bytes over TCP from `from` to a listener on `to` in `to_ns`, and
/// returns how long until the receiver had them all.
pub(super) fn timed_transfer(from: &Netns, to_ns: &Netns, to: SocketAddr) -> Duration {
    timed_transfer_of(from, to_ns, to, TRANSFER)
}

/// Sends `bytes` over TCP from `from` to a listener on `to` in `to_ns`, and returns
/// how long until the receiver had them all.
pub(super) fn timed_transfer_of(
    from: &Netns,
    to_ns: &Netns,
    to: SocketAddr,
    bytes: usize,
) -> Duration {
    let listener = to_ns.run(|| TcpListener::bind(to).expect("listening"));
    let receiver = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("reading");
        (received.len(), Instant::now())
    });
    let started = Instant::now();
    from.run(|| {
        let mut stream = TcpStream::connect(to).expect("connecting");
        stream.write_all(&vec![b'a'; bytes]).expect("sending");
    });
    let (received, done) = receiver.join().unwrap();
    assert_eq!(received, bytes);
    done - started
}

#[test]
fn small_egress_limit_takes_twenty_kib_more_than_ten_seconds() {
    // Mesos's ROOT_NC_SmallEgressLimit.
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--egress_rate_limit_per_container=2000B",
            "--minimum_egress_rate_limit=0B",
        ],
    );
    let (web, info) = create(&lab, "web", &[]);
    assert_eq!(info["egress_limit"]["rate"], 2000);
    assert_eq!(rate(&web, "eth0"), Some(2000));
    let fq_codel = kernel_has_fq_codel(&lab);
    let mut expected = vec!["htb"];
    if fq_codel {
        expected.push("fq_codel");
    }
    assert_eq!(qdisc_kinds(&web, "eth0"), expected);
    // At 2000 B/s a GSO packet may hold one segment (10 ms at the rate, at least one).
    let details = web.exec(&["ip", "-d", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&details.stdout).contains("gso_max_segs 1 "),
        "{}",
        String::from_utf8_lossy(&details.stdout)
    );
    let took = timed_transfer(&web, &lab.remote, (REMOTE_IPV4, 9000).into());
    assert!(
        took > Duration::from_secs(10),
        "20 KiB at 2000 B/s took {took:?}"
    );
    let stats = statistics(&lab, "web");
    assert_eq!(stats["net_tx_rate_limit"], 2000);
    assert!(stats.get("net_rx_rate_limit").is_none());
    let shaped = stats["net_traffic_control_statistics"].as_array().unwrap();
    let bw_limit = shaped.iter().find(|q| q["id"] == "bw_limit").unwrap();
    assert!(
        bw_limit["bytes"].as_u64().unwrap() > TRANSFER as u64,
        "{bw_limit}"
    );
    // bloat_reduction exactly when the kernel has fq_codel, and it saw the transfer.
    let bloat = shaped.iter().find(|q| q["id"] == "bloat_reduction");
    assert_eq!(bloat.is_some(), fq_codel, "{stats}");
    if let Some(bloat) = bloat {
        assert!(bloat["packets"].as_u64().unwrap() > 10, "{bloat}");
    }
}

#[test]
fn small_ingress_limit_takes_twenty_kib_more_than_nine_seconds() {
    // Mesos's ROOT_NC_SmallIngressLimit: shaped on the host end of the veth, which
    // the datapath then sends inbound packets through.
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--ingress_rate_limit_per_container=2000B",
            "--minimum_ingress_rate_limit=0B",
        ],
    );
    let (web, _) = create(&lab, "web", &[]);
    assert_eq!(rate(&lab.host, "netiso0"), Some(2000));
    // The remote stands for a network of full-size frames. (Its own TCP would send
    // 64 KiB packets over the veth, as a NIC's receive offload would hand them up; htb
    // charges a packet once it has gone, so such a transfer ends up to one packet
    // early. See the README.)
    lab.remote
        .exec(&["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"]);
    assert_eq!(htb_class(&web, "eth0"), None, "no egress limit");
    let took = timed_transfer(&lab.remote, &web, (HOST_IPV4, 31000).into());
    assert!(
        took >= Duration::from_secs(9),
        "20 KiB at 2000 B/s took {took:?}"
    );
    let stats = statistics(&lab, "web");
    assert_eq!(stats["net_rx_rate_limit"], 2000);
    let ids: Vec<&str> = stats["net_traffic_control_statistics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"ingress_bw_limit"), "{stats}");
    // Unshaped traffic still arrives straight away: the host's own ports.
    let host = lab
        .host
        .run(|| TcpListener::bind((HOST_IPV4, 9100)).unwrap());
    let fast = thread::spawn(move || host.accept().map(|_| ()).is_ok());
    lab.remote
        .run(|| TcpStream::connect((HOST_IPV4, 9100)).expect("connect"));
    assert!(fast.join().unwrap());
}

#[test]
fn a_container_behind_an_ingress_limit_is_reached_from_the_host_and_other_containers() {
    // Shaped packets go out of the host end of the veth instead of straight to the
    // container's eth0: the container's kernel must still take them as its own,
    // whichever MAC they were sent to (loopback's, the gateway's) and whichever
    // namespace routed them.
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--ingress_rate_limit_per_container=10MB",
            "--minimum_ingress_rate_limit=0B",
        ],
    );
    let (web, _) = create(&lab, "web", &[]);
    let client_id = lab.container_id("client");
    let (ok, _, stderr) = cli(
        &lab,
        &["container", "create", &client_id, "--ports", "31100-31109"],
    );
    assert!(ok, "creating {client_id}: {stderr}");
    let client = Netns::existing(&format!("netiso-{client_id}"));
    let cases: [(&Netns, IpAddr, &str); 5] = [
        (
            &lab.host,
            IpAddr::V4(HOST_IPV4),
            "from the host to its address",
        ),
        (
            &lab.host,
            IpAddr::V6(HOST_IPV6),
            "from the host to its IPv6 address",
        ),
        (
            &lab.host,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "from the host to 127.0.0.1",
        ),
        (&client, IpAddr::V4(HOST_IPV4), "from another container"),
        (
            &client,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "from 127.0.0.1 in another container",
        ),
    ];
    for (from, to, what) in cases {
        let server = start_tcp_listener(&web, to, 31001);
        assert!(
            send_tcp(from, SocketAddr::new(to, 31001), what),
            "{what}: no connection"
        );
        let received = server.wait_with_output().stdout;
        assert_eq!(String::from_utf8_lossy(&received), what, "{what}");
    }
}

#[test]
fn rates_per_cpu_follow_the_container_cpus_within_their_clamps() {
    // Mesos's ROOT_ScaleEgressWithCPU and ROOT_ScaleIngressWithCPU.
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--resources=ports:[31000-32000];ephemeral_ports:[30001-30999];cpus:8",
            "--egress_rate_per_cpu=1000B",
            "--minimum_egress_rate_limit=2000B",
            "--maximum_egress_rate_limit=4000B",
            "--ingress_rate_per_cpu=1000B",
            "--minimum_ingress_rate_limit=2000B",
            "--maximum_ingress_rate_limit=4000B",
        ],
    );
    let (web, _) = create(&lab, "web", &["--cpus", "1"]);
    for (cpus, expected) in [(None, 2000), (Some("3.1"), 3000), (Some("5"), 4000)] {
        if let Some(cpus) = cpus {
            let info = update_cpus(&lab, "web", cpus);
            assert_eq!(info["egress_limit"]["rate"], expected);
            assert_eq!(info["ingress_limit"]["rate"], expected);
        }
        assert_eq!(rate(&web, "eth0"), Some(expected), "egress, cpus {cpus:?}");
        assert_eq!(
            rate(&lab.host, "netiso0"),
            Some(expected),
            "ingress, cpus {cpus:?}"
        );
    }
}

#[test]
fn rates_per_cpu_from_a_100_gbit_link_do_not_overflow() {
    if netiso_tests::skipped_in_vm("the same htb encoding is tested by the per-CPU test") {
        return;
    }
    // Mesos's ROOT_ScaleEgressWithCPULarge: 5 859 375 000 B/s overflowed 32-bit paths.
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--resources=ports:[31000-32000];ephemeral_ports:[30001-30999];cpus:64",
            "--egress_rate_per_cpu=auto",
            "--network_link_speed=12500000000B",
            "--minimum_egress_rate_limit=625000000B",
            "--maximum_egress_rate_limit=11250000000B",
        ],
    );
    let (web, _) = create(&lab, "web", &["--cpus", "30"]);
    assert_eq!(rate(&web, "eth0"), Some(5_859_375_000));
    for (cpus, expected) in [
        ("1", 625_000_000),
        ("30", 5_859_375_000),
        ("60", 11_250_000_000),
    ] {
        update_cpus(&lab, "web", cpus);
        assert_eq!(rate(&web, "eth0"), Some(expected), "cpus {cpus}");
    }
}

#[test]
fn auto_rates_share_the_link_speed_over_the_agent_cpus() {
    if netiso_tests::skipped_in_vm("rate computation does not depend on the kernel") {
        return;
    }
    // Mesos's ROOT_ScaleEgressWithCPUAutoConfig and ROOT_ScaleIngressWithCPUAutoConfig:
    // 10000 B/s over 10 CPUs is 1000 per CPU.
    let lab = Lab::new();
    let agent = Agent::start(
        &lab,
        &[
            "--resources=ports:[31000-32000];ephemeral_ports:[30001-30999];cpus:10",
            "--egress_rate_per_cpu=auto",
            "--ingress_rate_per_cpu=auto",
            "--network_link_speed=10000B",
            "--minimum_egress_rate_limit=2000B",
            "--maximum_egress_rate_limit=4000B",
            "--minimum_ingress_rate_limit=2000B",
            "--maximum_ingress_rate_limit=4000B",
        ],
    );
    let (web, _) = create(&lab, "web", &["--cpus", "1"]);
    for (cpus, expected) in [(None, 2000), (Some("3.1"), 3000), (Some("5"), 4000)] {
        if let Some(cpus) = cpus {
            update_cpus(&lab, "web", cpus);
        }
        assert_eq!(rate(&web, "eth0"), Some(expected));
        assert_eq!(rate(&lab.host, "netiso0"), Some(expected));
    }
    agent.stop();
    // Without --network_link_speed, the public interface's speed: a veth says
    // 10 Gbit/s, 1.25 GB/s, so 125 MB/s per CPU.
    let _agent = Agent::start(
        &lab,
        &[
            "--resources=ports:[31000-32000];ephemeral_ports:[30001-30999];cpus:10",
            "--egress_rate_per_cpu=auto",
        ],
    );
    update_cpus(&lab, "web", "2");
    assert_eq!(rate(&web, "eth0"), Some(250_000_000));
}

#[test]
fn a_zero_rate_means_no_limit() {
    if netiso_tests::skipped_in_vm("flag handling does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--egress_rate_limit_per_container=0B",
            "--ingress_rate_limit_per_container=0B",
        ],
    );
    let (web, info) = create(&lab, "web", &[]);
    assert!(info.get("egress_limit").is_none(), "{info}");
    assert_eq!(htb_class(&web, "eth0"), None);
    assert_eq!(htb_class(&lab.host, "netiso0"), None);
    let stats = statistics(&lab, "web");
    assert!(stats.get("net_tx_rate_limit").is_none(), "{stats}");
    assert!(stats.get("net_traffic_control_statistics").is_none());
}

#[test]
fn limits_follow_the_agent_flags_across_restarts_like_mesos_upgrade() {
    // Mesos's ROOT_Upgrade, with agent restarts in place of isolator re-creation.
    let lab = Lab::new();
    let agent = Agent::start(&lab, &["--ingress_isolate_existing_containers=false"]);
    let (web, _) = create(&lab, "web", &["--cpus", "1"]);
    let both = |web: &Netns| (rate(web, "eth0"), rate(&lab.host, "netiso0"));
    assert_eq!(both(&web), (None, None));
    agent.stop();
    let limits = [
        "--egress_rate_limit_per_container=1000B",
        "--minimum_egress_rate_limit=0B",
        "--ingress_rate_limit_per_container=1000B",
        "--minimum_ingress_rate_limit=0B",
    ];
    let with = |isolate: &str| {
        let mut args = limits.to_vec();
        args.push(isolate);
        Agent::start(&lab, &args)
    };
    let agent = with("--ingress_isolate_existing_containers=false");
    assert_eq!(both(&web), (Some(1000), None), "ingress stays off");
    agent.stop();
    let agent = with("--ingress_isolate_existing_containers=true");
    assert_eq!(both(&web), (Some(1000), Some(1000)));
    agent.stop();
    let _agent = Agent::start(&lab, &[]);
    assert_eq!(both(&web), (None, None), "limits removed");
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert!(list[0].get("egress_limit").is_none(), "{list}");
}

#[test]
fn an_iperf3_stream_under_a_10_mbit_limit_lands_within_5_percent() {
    if netiso_tests::skipped_in_vm("software emulation cannot keep a steady 10 Mbit/s") {
        return;
    }
    let lab = Lab::new();
    // 10 Mbit/s = 1 250 000 B/s.
    let _agent = Agent::start(
        &lab,
        &[
            "--egress_rate_limit_per_container=1250000B",
            "--minimum_egress_rate_limit=0B",
        ],
    );
    let (web, _) = create(&lab, "web", &[]);
    let _server = start_iperf3_server(&lab.remote, 5201);
    let output = web
        .command("iperf3")
        .args(["--client", &REMOTE_IPV4.to_string(), "--port", "5201"])
        .args(["--time", "5", "--omit", "1", "--json"])
        .output()
        .expect("running iperf3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let received = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    // htb counts whole frames; iperf3 counts TCP payload: 1448 of every 1514 bytes.
    let expected = 10_000_000.0 * 1448.0 / 1514.0;
    let error = (received - expected).abs() / expected;
    assert!(
        error <= 0.05,
        "iperf3 received {received:.0} bit/s, expected {expected:.0} ±5%"
    );
    // What the htb shaped never meets the host side's policer.
    let dropped = &statistics(&lab, "web")["netiso_datapath_statistics"]["tx_dropped_rate_limit"];
    assert_eq!(dropped, 0, "the policer dropped shaped traffic");
}
