//! Rate limits from a real agent: Mesos's tests 10-17 (small egress and ingress limits
//! timed with real transfers, rates per CPU following `container update --cpus`,
//! 64-bit rates, the upgrade sequence across agent restarts), read back from the
//! kernel with `tc`, plus an iperf3 stream under a 10 Mbit/s limit; unique egress
//! flows seen where packets arrive.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, LAB_RESOURCES, cli, http_get, run_netiso},
    lab::{HOST_IPV4, Lab, REMOTE_IPV4, mac_of, send_udp, start_iperf3_server},
    netns::Netns,
    wait::wait_until,
};
use serde_json::Value;

const LISTEN: &str = "127.0.0.1:5051";
const TRANSFER: usize = 20 * 1024;

fn id(lab: &Lab, name: &str) -> String {
    format!("lab-{}-{name}", lab.id)
}

fn start_agent(lab: &Lab, extra: &[&str]) -> Agent {
    let mut args = vec!["--listen", LISTEN];
    args.extend_from_slice(extra);
    Agent::start(lab, &args)
}

fn create(lab: &Lab, name: &str, extra: &[&str]) -> (Netns, Value) {
    let id = id(lab, name);
    let mut args = vec!["container", "create", &id, "--ports", "31000-31009"];
    args.extend_from_slice(extra);
    let (ok, info, stderr) = cli(lab, &args);
    assert!(ok, "creating {id}: {stderr}");
    (Netns::existing(&format!("netiso-{id}")), info)
}

fn update_cpus(lab: &Lab, name: &str, cpus: &str) -> Value {
    let id = id(lab, name);
    let (ok, info, stderr) = cli(lab, &["container", "update", &id, "--cpus", cpus]);
    assert!(ok, "updating {id}: {stderr}");
    info
}

/// `rate` and `ceil` of htb class 1:1 on `dev`, in bytes/s, as the kernel reports them
/// through `tc` (which prints exact values: it only shortens to a unit that divides).
fn htb_class(ns: &Netns, dev: &str) -> Option<(u64, u64)> {
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

fn bits_to_bytes(text: &str) -> u64 {
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

fn rate(ns: &Netns, dev: &str) -> Option<u64> {
    htb_class(ns, dev).map(|(rate, _)| rate)
}

/// The kinds of the qdiscs on `dev`, but for clsact (where the datapath's programs
/// hang on kernels without tcx).
fn qdisc_kinds(ns: &Netns, dev: &str) -> Vec<String> {
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
fn kernel_has_fq_codel(lab: &Lab) -> bool {
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

fn statistics(lab: &Lab, name: &str) -> Value {
    let id = id(lab, name);
    let all = http_get(&lab.host, LISTEN.parse().unwrap(), "/monitor/statistics").json();
    all.as_array()
        .unwrap()
        .iter()
        .find(|e| e["executor_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no statistics for {id}"))["statistics"]
        .clone()
}

/// Sends `TRANSFER` bytes over TCP from `from` to a listener on `to` in `to_ns`, and
/// returns how long until the receiver had them all.
fn timed_transfer(from: &Netns, to_ns: &Netns, to: SocketAddr) -> Duration {
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
        stream.write_all(&vec![b'a'; TRANSFER]).expect("sending");
    });
    let (received, done) = receiver.join().unwrap();
    assert_eq!(received, TRANSFER);
    done - started
}

#[test]
fn small_egress_limit_takes_twenty_kib_more_than_ten_seconds() {
    // Mesos's ROOT_NC_SmallEgressLimit.
    let lab = Lab::new();
    let _agent = start_agent(
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
    let _agent = start_agent(
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
fn rates_per_cpu_follow_the_container_cpus_within_their_clamps() {
    // Mesos's ROOT_ScaleEgressWithCPU and ROOT_ScaleIngressWithCPU.
    let lab = Lab::new();
    let _agent = start_agent(
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
    let _agent = start_agent(
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
    let agent = start_agent(
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
    let _agent = start_agent(
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
    let _agent = start_agent(
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
    let agent = start_agent(&lab, &["--ingress_isolate_existing_containers=false"]);
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
        start_agent(&lab, &args)
    };
    let agent = with("--ingress_isolate_existing_containers=false");
    assert_eq!(both(&web), (Some(1000), None), "ingress stays off");
    agent.stop();
    let agent = with("--ingress_isolate_existing_containers=true");
    assert_eq!(both(&web), (Some(1000), Some(1000)));
    agent.stop();
    let _agent = start_agent(&lab, &[]);
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
    let _agent = start_agent(
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
}

// ---- unique egress flows ----

fn create_with_ports(lab: &Lab, name: &str, ports: &str) -> (Netns, Value) {
    let id = id(lab, name);
    let (ok, info, stderr) = cli(lab, &["container", "create", &id, "--ports", ports]);
    assert!(ok, "creating {id}: {stderr}");
    (Netns::existing(&format!("netiso-{id}")), info)
}

/// Each container's `egress_flow`, by name, as `container list` shows them.
fn egress_flows(lab: &Lab) -> Vec<(String, Option<u64>)> {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    let prefix = id(lab, "");
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["id"].as_str().unwrap().trim_start_matches(&prefix);
            (name.to_owned(), c["egress_flow"].as_u64())
        })
        .collect()
}

/// Packets queued in each class of `dev` that holds any (`tc -s class show`; an
/// fq_codel lists its flows with packets as classes `major:flow`).
fn queued_per_class(ns: &Netns, dev: &str) -> std::collections::BTreeMap<String, u64> {
    let output = ns.exec(&["tc", "-s", "class", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut queued = std::collections::BTreeMap::new();
    let mut class = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"class") => class = words.get(2).map(|w| w.to_string()),
            Some(&"backlog") => {
                let packets: u64 = words[2].trim_end_matches('p').parse().expect("Np");
                if let Some(class) = class.take()
                    && packets > 0
                {
                    queued.insert(class, packets);
                }
            }
            _ => {}
        }
    }
    queued
}

#[test]
fn unique_egress_flows_give_each_container_its_own_fq_codel_flow() {
    let lab = Lab::new();
    if !kernel_has_fq_codel(&lab) {
        // The host kernel here: the agent runs on without flows, and says why.
        let qdiscs_before = qdisc_kinds(&lab.host, "eth0");
        let agent = start_agent(&lab, &["--egress_unique_flow_per_container"]);
        let (web, info) = create_with_ports(&lab, "web", "31000-31009");
        assert!(
            agent.log().contains(
                "--egress_unique_flow_per_container is not applied: the kernel lacks the fq_codel qdisc"
            ),
            "{}",
            agent.log()
        );
        assert!(info.get("egress_flow").is_none(), "{info}");
        assert_eq!(
            qdisc_kinds(&lab.host, "eth0"),
            qdiscs_before,
            "nothing installed"
        );
        let took = timed_transfer(&web, &lab.remote, (REMOTE_IPV4, 9000).into());
        assert!(took < Duration::from_secs(5), "traffic flows: {took:?}");
        return;
    }
    // An idle fq_codel passes packets on without queueing them, so no flow would ever
    // show. Behind a 1 B/s htb class they stay in their flows, for `tc` to see; that
    // also puts the fq_codel below a class (--egress_flow_classifier_parent), where
    // netiso gives it the handle 2:. The neighbour is static so no ARP waits there.
    let remote_mac = mac_of(&lab.remote, "eth0")
        .map(|b| format!("{b:02x}"))
        .join(":");
    for command in [
        "qdisc add dev eth0 root handle 1: htb default 1",
        "class add dev eth0 parent 1: classid 1:1 htb rate 8bit burst 1b cburst 1b quantum 1514",
    ] {
        let output = lab.host.exec(
            &std::iter::once("tc")
                .chain(command.split(' '))
                .collect::<Vec<_>>(),
        );
        assert!(output.status.success(), "tc {command}");
    }
    lab.host.ip(&[
        "neigh",
        "replace",
        "198.18.0.2",
        "lladdr",
        &remote_mac,
        "nud",
        "permanent",
        "dev",
        "eth0",
    ]);
    let flags = [
        "--egress_unique_flow_per_container",
        "--egress_flow_classifier_parent=1:1",
    ];
    let agent = start_agent(&lab, &flags);
    let output = lab.host.exec(&["tc", "-j", "qdisc", "show", "dev", "eth0"]);
    let qdiscs: Value = serde_json::from_slice(&output.stdout).expect("tc -j qdisc JSON");
    let fq_codel = qdiscs
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "fq_codel")
        .unwrap_or_else(|| panic!("no fq_codel: {qdiscs}"));
    assert_eq!(fq_codel["handle"], "2:", "{fq_codel}");
    assert_eq!(fq_codel["parent"], "1:1", "{fq_codel}");
    assert_eq!(fq_codel["options"]["flows"], 1024, "{fq_codel}");
    // One flow per container from 3 on, the lowest free first.
    let (web, _) = create_with_ports(&lab, "web", "31000-31009");
    let (db, _) = create_with_ports(&lab, "db", "31010-31019");
    assert_eq!(
        egress_flows(&lab),
        [("db".to_owned(), Some(4)), ("web".to_owned(), Some(3))]
    );
    // The class's bucket lets one packet through; after that, everything stays.
    let remote: SocketAddr = (REMOTE_IPV4, 9999).into();
    send_udp(&lab.host, remote, 1, 100);
    wait_until("the htb bucket is spent", Duration::from_secs(10), || {
        let output = lab
            .host
            .exec(&["tc", "-s", "class", "show", "dev", "eth0", "classid", "1:1"]);
        !String::from_utf8_lossy(&output.stdout).contains("Sent 0 bytes")
    });
    let before = queued_per_class(&lab.host, "eth0");
    send_udp(&web, remote, 7, 100);
    send_udp(&db, remote, 5, 100);
    send_udp(&lab.host, remote, 3, 100);
    let queued = queued_per_class(&lab.host, "eth0");
    let flow = |n: u32| {
        let class = format!("2:{n}");
        queued.get(&class).copied().unwrap_or(0) - before.get(&class).copied().unwrap_or(0)
    };
    assert_eq!(flow(3), 7, "web's datagrams in its flow 2:3: {queued:?}");
    assert_eq!(flow(4), 5, "db's in 2:4: {queued:?}");
    assert_eq!(flow(1), 3, "the host's in 2:1: {queued:?}");
    let elsewhere: Vec<_> = queued
        .keys()
        .filter(|c| c.starts_with("2:") && !["2:1", "2:2", "2:3", "2:4"].contains(&c.as_str()))
        .collect();
    assert!(elsewhere.is_empty(), "packets in hashed flows: {queued:?}");
    // A destroyed container's flow is free again; flows survive an agent restart.
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &id(&lab, "web")]);
    assert!(ok, "{stderr}");
    let (_cache, info) = create_with_ports(&lab, "cache", "31020-31029");
    assert_eq!(info["egress_flow"], 3, "{info}");
    assert!(agent.stop());
    let _agent = start_agent(&lab, &flags);
    assert_eq!(
        egress_flows(&lab),
        [("cache".to_owned(), Some(3)), ("db".to_owned(), Some(4))]
    );
    let (_, info) = create_with_ports(&lab, "queue", "31030-31039");
    assert_eq!(info["egress_flow"], 5, "{info}");
    send_udp(&db, remote, 2, 100);
    let queued = queued_per_class(&lab.host, "eth0");
    assert_eq!(queued.get("2:4"), Some(&7), "db keeps flow 2:4: {queued:?}");
}

#[test]
fn unique_egress_flows_keep_off_a_root_qdisc_somebody_else_put_there() {
    let lab = Lab::new();
    lab.host.exec(&[
        "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "5:", "htb",
    ]);
    let fq_codel = kernel_has_fq_codel(&lab);
    let pin_root = lab.pin_root().display().to_string();
    let mut args = vec![
        "agent",
        "--eth0-name",
        "eth0",
        "--bpffs-root",
        &pin_root,
        "--resources",
        LAB_RESOURCES,
        "--ephemeral_ports_per_container=16",
        "--listen",
        LISTEN,
        "--egress_unique_flow_per_container",
    ];
    let paths = lab.agent_paths();
    args.extend(paths.iter().map(String::as_str));
    if fq_codel {
        let (ok, _, stderr) = run_netiso(&lab.host, &args);
        assert!(!ok);
        assert_eq!(
            stderr.trim(),
            "netiso: error: eth0 already has qdisc htb 5:0 at root, where unique egress flows need fq_codel; remove it (tc qdisc del dev eth0 root) or pick another place with --egress_flow_classifier_parent"
        );
    } else {
        // Without fq_codel nothing is installed, so nothing conflicts.
        let agent = Agent::start_with_args(&lab.host, &args);
        assert!(agent.log().contains("is not applied"), "{}", agent.log());
    }
    assert_eq!(qdisc_kinds(&lab.host, "eth0"), ["htb"], "left alone");
}
