//! Real traffic through five setups side by side, each in a lab of its own (a host
//! namespace and a "remote" one on a veth pair), with iperf3: UDP with 64-byte
//! payloads (datagrams per second received) and TCP (Gbit/s), remote → service and
//! service → remote, over IPv4 and IPv6, with N = 1, 256, 1024 and 3840 containers
//! (or filters) present. (4096 containers would need every one of the 65536 ports
//! for Mesos's minimum of 16 ephemeral ports each; 3840 is what fits above port 4096.) The setups, measured in turn for each case so that a noisy
//! moment hits them alike:
//!
//! - netiso: the service in one of N containers, reached at the host's address;
//! - routed: the service in a plain namespace routed behind the host (its own
//!   address, the host forwarding), as standard container networking does;
//! - u32: Mesos's datapath, the service in a namespace with the host's address behind
//!   a chain of N u32 port filters on the public interface's ingress (mirred to its
//!   veth; its own filter last), and one u32 filter sending its packets out;
//! - limit: the service in the host's namespace, no container at all;
//! - netiso with limits: as netiso, every container with egress and ingress rate
//!   limits far above what this traffic reaches (5 GB/s), so shaped but never held;
//! - on a kernel with netkit, where netiso's containers get netkit pairs: netiso with
//!   veth pairs (`--container-device=veth`), the same run.
//!
//! Prints medians and spreads and the ratios netiso / routed, netiso / limit,
//! netiso / u32, (netiso with limits) / netiso and, with netkit, netiso / netiso on
//! veth. `cargo xtask bench traffic`; NETISO_TRAFFIC_COUNTS (such as
//! "1,1024"), NETISO_TRAFFIC_SECONDS (per run, 2), NETISO_TRAFFIC_RUNS (3) and
//! NETISO_TRAFFIC_CASES (cases whose label contains it, such as "UDP-64 out") change
//! the defaults.
use std::{fmt::Write as _, io::Write as _, net::IpAddr, process::Stdio, time::Instant};

use netiso_tests::{
    agent::{Agent, api_request},
    lab::{
        HOST_IPV4, HOST_IPV6, Lab, PUBLIC_IFACE, Proto, REMOTE_IPV4, REMOTE_IPV6, add_veth_pair,
        mac_of, wait_for_listener,
    },
    netns::{ChildGuard, Netns, run_checked},
};

/// The service's port.
const PORT: u16 = 3000;
/// 3840 containers' ephemeral ranges of 16 ports, above the service's port and the
/// lab host's own range (moved to [`HOST_EPHEMERAL`]).
const RESOURCES: &str = "--resources=ports:[3000-3000];ephemeral_ports:[4096-65535]";
const HOST_EPHEMERAL: &str = "2000 2999";
/// The routed namespace's network behind the host.
const ROUTED_HOST_IPV4: &str = "198.18.2.1";
const ROUTED_IPV4: &str = "198.18.2.2";
const ROUTED_HOST_IPV6: &str = "2001:db8:2::1";
const ROUTED_IPV6: &str = "2001:db8:2::2";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Netiso,
    Routed,
    U32,
    Limit,
    NetisoLimited,
    NetisoVeth,
}

/// The setups measured: the last only where containers get netkit by default.
fn setups() -> Vec<Setup> {
    let mut setups = vec![
        Setup::Netiso,
        Setup::Routed,
        Setup::U32,
        Setup::Limit,
        Setup::NetisoLimited,
    ];
    if netiso::net::container_device::probe_netkit().is_ok() {
        setups.push(Setup::NetisoVeth);
    }
    setups
}
/// Rate limits of the limited netiso setup: above anything iperf3 reaches here.
const UNREACHED_LIMITS: [&str; 2] = [
    "--egress_rate_limit_per_container=5GB",
    "--ingress_rate_limit_per_container=5GB",
];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Netiso => "netiso",
            Setup::Routed => "routed",
            Setup::U32 => "u32",
            Setup::Limit => "limit",
            Setup::NetisoLimited => "netiso with limits",
            Setup::NetisoVeth => "netiso on veth",
        }
    }
}

/// One measured case.
#[derive(Clone, Copy)]
struct Case {
    udp: bool,
    /// Service → remote (iperf3 --reverse) instead of remote → service.
    outbound: bool,
    ipv6: bool,
}

impl Case {
    fn label(self) -> String {
        format!(
            "{} {} {}",
            if self.udp { "UDP-64" } else { "TCP" },
            if self.outbound { "out" } else { "in" },
            if self.ipv6 { "v6" } else { "v4" }
        )
    }
}

/// A setup built in its own lab, with the service running.
struct Built {
    setup: Setup,
    lab: Lab,
    /// Where the remote reaches the service.
    ipv4: IpAddr,
    ipv6: IpAddr,
    /// The service, the agent and the namespaces it needs, kept alive while it is
    /// measured.
    _service: ChildGuard,
    _agent: Option<Agent>,
    _namespaces: Vec<Netns>,
}

fn main() {
    let counts: Vec<usize> = env_list("NETISO_TRAFFIC_COUNTS").unwrap_or(vec![1, 256, 1024, 3840]);
    let seconds: u32 = env_number("NETISO_TRAFFIC_SECONDS").unwrap_or(2);
    let runs: usize = env_number("NETISO_TRAFFIC_RUNS").unwrap_or(3);
    let cases: Vec<Case> = [false, true]
        .into_iter()
        .flat_map(|udp| {
            [false, true].into_iter().flat_map(move |outbound| {
                [false, true].map(move |ipv6| Case {
                    udp,
                    outbound,
                    ipv6,
                })
            })
        })
        .filter(|case: &Case| {
            std::env::var("NETISO_TRAFFIC_CASES").map_or(true, |only| case.label().contains(&only))
        })
        .collect();
    assert!(
        !cases.is_empty(),
        "NETISO_TRAFFIC_CASES matches no case: name part of a label such as \"UDP-64 out v4\""
    );
    println!(
        "traffic: iperf3, {seconds} s per run, median of {runs} runs (min-max); UDP in datagrams/s received, TCP in Gbit/s"
    );
    let mut report = String::new();
    for &count in &counts {
        eprintln!("  building the setups with {count} containers/filters…");
        let started = Instant::now();
        let setups = setups();
        let built: Vec<Built> = setups.iter().map(|&s| build(s, count)).collect();
        eprintln!("  built in {:.1} s", started.elapsed().as_secs_f64());
        let _ = writeln!(report, "\nN = {count}");
        let mut header = format!("{:<14}", "case");
        for setup in &setups {
            let _ = write!(header, " {:>22}", setup.name());
        }
        let _ = write!(
            header,
            "   {:>7} {:>7} {:>7} {:>7}",
            "/routed", "/limit", "/u32", "limits/"
        );
        if setups.contains(&Setup::NetisoVeth) {
            let _ = write!(header, " {:>7}", "/veth");
        }
        let _ = writeln!(report, "{header}");
        for &case in &cases {
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
            for _ in 0..runs {
                for (index, setup) in built.iter().enumerate() {
                    samples[index].push(measure(setup, case, seconds));
                }
            }
            let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
            let mut line = format!("{:<14}", case.label());
            for values in &samples {
                let (lo, hi) = spread(values);
                let _ = write!(
                    line,
                    " {:>22}",
                    format!(
                        "{} ({}-{})",
                        show(case, median_of(values)),
                        show(case, lo),
                        show(case, hi)
                    )
                );
            }
            let ratio = |other: usize| medians[0] / medians[other];
            let _ = write!(
                line,
                "   {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                ratio(1),
                ratio(3),
                ratio(2),
                medians[4] / medians[0]
            );
            if setups.contains(&Setup::NetisoVeth) {
                let _ = write!(line, " {:>7.2}", ratio(5));
            }
            println!("{line}");
            let _ = writeln!(report, "{line}");
            let _ = std::io::stdout().flush();
        }
        drop(built);
    }
    println!("\nsummary:{report}");
}

/// Builds `setup` with `count` containers (netiso) or filters (u32) in a new lab.
fn build(setup: Setup, count: usize) -> Built {
    let lab = Lab::new();
    let (v4, v6) = (IpAddr::V4(HOST_IPV4), IpAddr::V6(HOST_IPV6));
    let (service, (ipv4, ipv6), agent, namespaces) = match setup {
        Setup::Limit => (iperf3_server(&lab.host), (v4, v6), None, vec![]),
        Setup::Routed => {
            let ns = Netns::create(&format!("netiso-lab-{}-routed", lab.id));
            veth(&lab.host, "ctr", &ns, PUBLIC_IFACE);
            lab.host.ip(&[
                "addr",
                "add",
                &format!("{ROUTED_HOST_IPV4}/24"),
                "dev",
                "ctr",
            ]);
            lab.host.ip(&[
                "addr",
                "add",
                &format!("{ROUTED_HOST_IPV6}/64"),
                "dev",
                "ctr",
                "nodad",
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{ROUTED_IPV4}/24"),
                "dev",
                PUBLIC_IFACE,
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{ROUTED_IPV6}/64"),
                "dev",
                PUBLIC_IFACE,
                "nodad",
            ]);
            ns.ip(&["route", "add", "default", "via", ROUTED_HOST_IPV4]);
            ns.ip(&["-6", "route", "add", "default", "via", ROUTED_HOST_IPV6]);
            for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                lab.host.exec(&["sysctl", "-qw", key]);
            }
            lab.remote.ip(&[
                "route",
                "add",
                "198.18.2.0/24",
                "via",
                &HOST_IPV4.to_string(),
            ]);
            lab.remote.ip(&[
                "-6",
                "route",
                "add",
                "2001:db8:2::/64",
                "via",
                &HOST_IPV6.to_string(),
            ]);
            (
                iperf3_server(&ns),
                (ROUTED_IPV4.parse().unwrap(), ROUTED_IPV6.parse().unwrap()),
                None,
                vec![ns],
            )
        }
        Setup::U32 => {
            let ns = Netns::create(&format!("netiso-lab-{}-u32", lab.id));
            veth(&lab.host, "ctr", &ns, PUBLIC_IFACE);
            let host_mac = mac_string(mac_of(&lab.host, PUBLIC_IFACE));
            let remote_mac = mac_string(mac_of(&lab.remote, PUBLIC_IFACE));
            // As Mesos: the container has the host's addresses and MAC; it knows the
            // remote's MAC, so its packets can leave by the host's interface as they are.
            ns.ip(&["link", "set", PUBLIC_IFACE, "address", &host_mac]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{HOST_IPV4}/24"),
                "dev",
                PUBLIC_IFACE,
            ]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{HOST_IPV6}/64"),
                "dev",
                PUBLIC_IFACE,
                "nodad",
            ]);
            for remote in [REMOTE_IPV4.to_string(), REMOTE_IPV6.to_string()] {
                let neighbour = ["neigh", "replace", &remote, "lladdr", &remote_mac];
                ns.ip(&[&neighbour[..], &["dev", PUBLIC_IFACE, "nud", "permanent"]].concat());
            }
            u32_chain(&lab.host, count);
            (iperf3_server(&ns), (v4, v6), None, vec![ns])
        }
        Setup::Netiso | Setup::NetisoLimited | Setup::NetisoVeth => {
            lab.host.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.ip_local_port_range={HOST_EPHEMERAL}"),
            ]);
            let mut args = vec![RESOURCES];
            if setup == Setup::NetisoLimited {
                args.extend(UNREACHED_LIMITS);
            }
            if setup == Setup::NetisoVeth {
                args.push("--container-device=veth");
            }
            let agent = Agent::start(&lab, &args);
            let service = format!("lab-{}-service", lab.id);
            let created = api_request(
                &lab,
                "POST",
                "/v1/containers",
                format!(r#"{{"id":"{service}","ports":[{{"begin":{PORT},"end":{PORT}}}]}}"#),
            );
            assert_eq!(created.status, 201, "{}", created.body);
            for index in 1..count {
                let id = format!("lab-{}-c{index}", lab.id);
                let created = api_request(
                    &lab,
                    "POST",
                    "/v1/containers",
                    format!(r#"{{"id":"{id}"}}"#),
                );
                assert_eq!(created.status, 201, "container {index}: {}", created.body);
            }
            let inside = Netns::existing(&format!("netiso-{service}"));
            (iperf3_server(&inside), (v4, v6), Some(agent), vec![])
        }
    };
    Built {
        setup,
        lab,
        ipv4,
        ipv6,
        _service: service,
        _agent: agent,
        _namespaces: namespaces,
    }
}

/// A veth pair `a_name` in `a` ↔ `b_name` in `b`, both up.
fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    add_veth_pair((a_name, a), (b_name, b));
    a.ip(&["link", "set", a_name, "up"]);
    b.ip(&["link", "set", b_name, "up"]);
}

/// Mesos's datapath on the lab host: an ingress chain of `count` u32 port filters on
/// the public interface per family, the service's last, each redirecting to the
/// container's veth; its veth's packets redirected out of the public interface.
fn u32_chain(host: &Netns, count: usize) {
    let mut batch = format!("qdisc add dev {PUBLIC_IFACE} ingress\nqdisc add dev ctr ingress\n");
    for (protocol, prio, matcher) in [("ip", 1, "ip dport"), ("ipv6", 2, "ip6 dport")] {
        // Other containers' ports first (never the service's), then the service's.
        for index in 1..count {
            let port = 40000 + index;
            let _ = writeln!(
                batch,
                "filter add dev {PUBLIC_IFACE} parent ffff: protocol {protocol} prio {prio} u32 match {matcher} {port} 0xffff action mirred egress redirect dev ctr"
            );
        }
        let _ = writeln!(
            batch,
            "filter add dev {PUBLIC_IFACE} parent ffff: protocol {protocol} prio {prio} u32 match {matcher} {PORT} 0xffff action mirred egress redirect dev ctr"
        );
        let _ = writeln!(
            batch,
            "filter add dev ctr parent ffff: protocol {protocol} prio {prio} u32 match u32 0 0 action mirred egress redirect dev {PUBLIC_IFACE}"
        );
    }
    let path = std::env::temp_dir().join(format!("netiso-u32-{}.batch", std::process::id()));
    std::fs::write(&path, batch).expect("writing the tc batch");
    run_checked(
        host.command("tc")
            .args(["-batch", &path.display().to_string()]),
    );
    let _ = std::fs::remove_file(path);
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A long-lived iperf3 server in `ns` (its output discarded, so it never blocks).
fn iperf3_server(ns: &Netns) -> ChildGuard {
    let child = ns
        .command("iperf3")
        .args(["--server", "--port", &PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting iperf3 (setup installs it)");
    wait_for_listener(ns, Proto::Tcp, PORT);
    ChildGuard::new(child)
}

/// One iperf3 run from the remote: datagrams/s received (UDP) or Gbit/s (TCP).
fn measure(built: &Built, case: Case, seconds: u32) -> f64 {
    let server = if case.ipv6 { built.ipv6 } else { built.ipv4 };
    let mut args = vec![
        "iperf3".to_owned(),
        "--client".into(),
        server.to_string(),
        "--port".into(),
        PORT.to_string(),
        "--time".into(),
        seconds.to_string(),
        "--json".into(),
    ];
    if case.udp {
        args.extend(["--udp", "--length", "64", "--bitrate", "0"].map(str::to_owned));
    }
    if case.outbound {
        args.push("--reverse".into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // A server busy with a previous client's end refuses for a moment: try again.
    for _ in 0..5 {
        let output = built
            .lab
            .remote
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .expect("running iperf3");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if json.get("error").is_some() || !output.status.success() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            continue;
        }
        let end = &json["end"];
        return if case.udp {
            let sum = &end["sum"];
            let received = sum["packets"].as_f64().unwrap_or(0.0)
                - sum["lost_packets"].as_f64().unwrap_or(0.0);
            received / sum["seconds"].as_f64().unwrap_or(f64::from(seconds))
        } else {
            end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e9
        };
    }
    panic!(
        "iperf3 against {} ({}) kept failing",
        built.setup.name(),
        case.label()
    );
}

fn show(case: Case, value: f64) -> String {
    if case.udp {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.2}")
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    median(&mut sorted)
}

fn spread(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn env_list(name: &str) -> Option<Vec<usize>> {
    let value = std::env::var(name).ok()?;
    value.split(',').map(|n| n.trim().parse().ok()).collect()
}
