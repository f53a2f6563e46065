//! The CNI plugin run exactly as runtimes run it: the `netiso` binary with the `CNI_*`
//! environment and the network configuration on stdin, its answer on stdout and its
//! exit status, against a lab agent. Runtime namespaces are made here, as podman makes
//! `/run/netns/netns-<uuid>`.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netiso_tests::{
    agent::{Agent, cli},
    cni::{PluginRun, run_plugin},
    lab::{HOST_IPV4, HOST_IPV6, Lab, mac_of, send_tcp, start_tcp_listener},
    leaks::assert_holds_only_live_containers,
    netns::Netns,
    wait::wait_until,
};
use serde_json::{Value, json};

use super::rate_limits::htb_class;

const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Runs the plugin in the lab's host namespace, as a runtime on that host would.
fn plugin(lab: &Lab, command: &str, env: &[(&str, &str)], stdin: &Value) -> PluginRun {
    run_plugin(&lab.host, command, env, stdin)
}

fn config(lab: &Lab, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "netiso",
        "socket": lab.api_socket(),
        "dns": { "nameservers": ["198.18.0.53"] },
    })
}

/// A runtime's attachment: its namespace and environment.
struct Sandbox {
    netns: Netns,
    id: String,
    ifname: &'static str,
}

impl Sandbox {
    fn new(lab: &Lab, name: &str) -> Self {
        Self {
            netns: lab.runtime_netns(name),
            id: lab.cni_container_id(name),
            ifname: "eth0",
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_CONTAINERID", self.id.clone()),
            ("CNI_NETNS", self.netns.path().display().to_string()),
            ("CNI_IFNAME", self.ifname.to_owned()),
        ]
    }

    fn run(&self, lab: &Lab, command: &str, extra: &[(&str, &str)], stdin: &Value) -> PluginRun {
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        plugin(lab, command, &all, stdin)
    }
}

/// A lab for tests of plugin and agent logic, which is the same on every kernel:
/// `None` in the VM (the host runs them; emulation would only make them slow).
fn logic_lab() -> Option<Lab> {
    let skipped = netiso_tests::skipped_in_vm(
        "plugin and agent logic, the same on every kernel: the host runs it",
    );
    (!skipped).then(Lab::new)
}

fn list(lab: &Lab) -> Value {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    list
}

fn with_ports(mut config: Value, mappings: Value) -> Value {
    config["runtimeConfig"] = json!({ "portMappings": mappings });
    config
}

#[test]
fn version_answers_every_version_even_with_dummy_values() {
    let Some(lab) = logic_lab() else { return };
    for version in VERSIONS {
        let env = [
            ("CNI_NETNS", "dummy"),
            ("CNI_CONTAINERID", "dummy"),
            ("CNI_IFNAME", "dummy"),
        ];
        let run = plugin(&lab, "VERSION", &env, &json!({ "cniVersion": version }));
        assert!(run.ok, "{version}: {}", run.err);
        assert_eq!(run.out["cniVersion"], version);
        assert_eq!(run.out["supportedVersions"], json!(VERSIONS));
    }
}

#[test]
fn add_gives_the_runtime_namespace_the_hosts_addresses_and_its_ports() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let web = Sandbox::new(&lab, "web");
    let stdin = with_ports(
        config(&lab, "1.0.0", "netiso"),
        json!([
            { "hostPort": 31001, "containerPort": 31001, "protocol": "tcp" },
            { "hostPort": 31001, "containerPort": 31001, "protocol": "udp" },
            { "hostPort": 31002, "containerPort": 31002, "protocol": "tcp", "hostIP": "198.18.0.1" },
        ]),
    );
    let args = [(
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAME=web;NETISO_PORTS=31005",
    )];
    let added = web.run(&lab, "ADD", &args, &stdin);
    assert!(added.ok, "ADD: {} {}", added.out, added.err);
    let result = &added.out;
    assert_eq!(result["cniVersion"], "1.0.0");
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2, "{result}");
    assert!(
        interfaces[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("netiso")
    );
    assert!(interfaces[0].get("sandbox").is_none(), "{result}");
    assert_eq!(interfaces[1]["name"], "eth0");
    assert_eq!(
        interfaces[1]["sandbox"],
        web.netns.path().display().to_string()
    );
    let [a, b, c, d, e, f] = mac_of(&web.netns, "eth0");
    assert_eq!(
        interfaces[1]["mac"],
        format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
    );
    assert_eq!(
        result["ips"],
        json!([
            { "address": format!("{HOST_IPV4}/32"), "gateway": "169.254.1.1", "interface": 1 },
            { "address": format!("{HOST_IPV6}/128"), "gateway": "fe80::1", "interface": 1 },
        ])
    );
    assert_eq!(
        result["routes"],
        json!([{ "dst": "0.0.0.0/0", "gw": "169.254.1.1" }, { "dst": "::/0", "gw": "fe80::1" }])
    );
    assert_eq!(result["dns"], json!({ "nameservers": ["198.18.0.53"] }));

    // The agent has it as a container with the runtime's labels and the ports.
    let containers = list(&lab);
    let container = &containers[0];
    assert_eq!(container["attachment"]["container_id"], web.id.as_str());
    assert_eq!(container["labels"], json!({ "K8S_POD_NAME": "web" }));
    assert_eq!(
        container["ports"],
        json!([{ "begin": 31001, "end": 31002 }, { "begin": 31005, "end": 31005 }])
    );
    // The remote reaches a service in the runtime's namespace at the host's address.
    for address in [IpAddr::V4(HOST_IPV4), IpAddr::V6(HOST_IPV6)] {
        let server = start_tcp_listener(&web.netns, address, 31001);
        assert!(send_tcp(
            &lab.remote,
            SocketAddr::new(address, 31001),
            "hello"
        ));
        assert_eq!(
            String::from_utf8_lossy(&server.wait_with_output().stdout),
            "hello"
        );
    }
    let checked = web.run(&lab, "CHECK", &[], &stdin);
    assert!(checked.ok, "CHECK: {} {}", checked.out, checked.err);

    let deleted = web.run(&lab, "DEL", &[], &stdin);
    assert!(deleted.ok, "DEL: {} {}", deleted.out, deleted.err);
    assert_eq!(deleted.out, Value::Null);
    // The runtime's namespace lives on, without what netiso put there: the name is
    // free as DEL answers, and the pair, set aside, is gone soon after.
    let links = || {
        String::from_utf8_lossy(&web.netns.exec(&["ip", "-o", "link", "show"]).stdout).into_owned()
    };
    let right_after = links();
    assert!(!right_after.contains("eth0"), "{right_after}");
    // A runtime may attach the same namespace again at once.
    let again = web.run(&lab, "ADD", &[], &stdin);
    assert!(again.ok, "ADD right after DEL: {} {}", again.out, again.err);
    let deleted = web.run(&lab, "DEL", &[], &stdin);
    assert!(deleted.ok, "DEL: {} {}", deleted.out, deleted.err);
    assert_holds_only_live_containers(&lab, &list(&lab), "after DEL");
    // Set aside, not deleted while the plugin waited.
    assert!(!agent.log().contains("aside"), "{}", agent.log());
    wait_until(
        "the set-aside pair to be deleted",
        Duration::from_secs(10),
        || links().lines().count() == 1,
    );
    assert_eq!(web.run(&lab, "CHECK", &[], &stdin).code(), 3);
}

#[test]
fn results_take_the_shape_of_each_version() {
    let Some(lab) = logic_lab() else { return };
    let _agent = Agent::start(&lab, &[]);
    for version in VERSIONS {
        let sandbox = Sandbox::new(&lab, &format!("v{}", version.replace('.', "")));
        let stdin = config(&lab, version, "netiso");
        let added = sandbox.run(&lab, "ADD", &[], &stdin);
        assert!(added.ok, "{version}: {} {}", added.out, added.err);
        let result = &added.out;
        assert_eq!(result["cniVersion"], version);
        match version {
            "0.1.0" | "0.2.0" => {
                assert_eq!(result["ip4"]["ip"], format!("{HOST_IPV4}/32"), "{result}");
                assert_eq!(result["ip4"]["gateway"], "169.254.1.1");
                assert_eq!(result["ip6"]["ip"], format!("{HOST_IPV6}/128"));
                assert_eq!(result["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
                assert!(result.get("interfaces").is_none(), "{result}");
            }
            "0.3.0" | "0.3.1" | "0.4.0" => {
                assert_eq!(result["ips"][0]["version"], "4", "{result}");
                assert_eq!(result["ips"][1]["version"], "6", "{result}");
            }
            _ => assert!(result["ips"][0].get("version").is_none(), "{result}"),
        }
        let deleted = sandbox.run(&lab, "DEL", &[], &stdin);
        assert!(deleted.ok, "{version}: {}", deleted.err);
    }
    // Mesos's network/cni isolator: a .conf in 0.2.0, port mappings in its args.
    let mesos = Sandbox::new(&lab, "mesos");
    let mut stdin = config(&lab, "0.2.0", "netiso");
    stdin["args"] = json!({ "org.apache.mesos": { "network_info": { "port_mappings": [
        { "host_port": 31080, "container_port": 80, "protocol": "tcp" },
        { "host_port": 31081, "container_port": 31081, "protocol": "udp" },
    ]}}});
    let added = mesos.run(&lab, "ADD", &[], &stdin);
    assert!(added.ok, "{} {}", added.out, added.err);
    assert_eq!(added.out["ip4"]["ip"], format!("{HOST_IPV4}/32"));
    let containers = list(&lab);
    assert_eq!(
        containers[0]["ports"],
        json!([{ "begin": 31080, "end": 31081 }])
    );
    assert_eq!(
        containers[0]["port_mappings"],
        json!([{ "host_port": 31080, "container_port": 80 }])
    );
    assert!(mesos.run(&lab, "DEL", &[], &stdin).ok);
    assert_holds_only_live_containers(&lab, &list(&lab), "after every version");
}

#[test]
fn del_succeeds_whatever_is_left() {
    let Some(lab) = logic_lab() else { return };
    let _agent = Agent::start(&lab, &[]);
    let stdin = config(&lab, "1.0.0", "netiso");
    // Never added, and with containerd's empty CNI_NETNS.
    let unknown = Sandbox::new(&lab, "unknown");
    assert!(unknown.run(&lab, "DEL", &[], &stdin).ok);
    assert!(unknown.run(&lab, "DEL", &[("CNI_NETNS", "")], &stdin).ok);
    // Added, then deleted with an empty CNI_NETNS, twice.
    let a = Sandbox::new(&lab, "a");
    assert!(a.run(&lab, "ADD", &[], &stdin).ok);
    for _ in 0..2 {
        let deleted = a.run(&lab, "DEL", &[("CNI_NETNS", "")], &stdin);
        assert!(deleted.ok, "{}", deleted.err);
    }
    assert_eq!(list(&lab), json!([]));
    // Added, then the runtime's namespace went away before DEL.
    let b = Sandbox::new(&lab, "b");
    assert!(b.run(&lab, "ADD", &[], &stdin).ok);
    let env = b.env();
    let b_id = b.id.clone();
    drop(b);
    let gone: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(plugin(&lab, "DEL", &gone, &stdin).ok);
    assert_eq!(list(&lab), json!([]), "{b_id} is gone");
    // A failed ADD (a port outside the agent's), then its DEL.
    let c = Sandbox::new(&lab, "c");
    let refused = c.run(&lab, "ADD", &[("CNI_ARGS", "NETISO_PORTS=80")], &stdin);
    assert_eq!(refused.code(), 7, "{}", refused.out);
    assert!(c.run(&lab, "DEL", &[], &stdin).ok);
    assert_holds_only_live_containers(&lab, &list(&lab), "after every DEL");
}

#[test]
fn errors_are_the_specs_json_and_leave_nothing() {
    let Some(lab) = logic_lab() else { return };
    let agent = Agent::start(&lab, &[]);
    let stdin = config(&lab, "1.0.0", "netiso");
    let sandbox = Sandbox::new(&lab, "s");
    let code = |command: &str, extra: &[(&str, &str)], stdin: &Value| {
        sandbox.run(&lab, command, extra, stdin).code()
    };
    // Undecodable, an unknown version, no name.
    let garbage = json!("not a configuration");
    assert_eq!(code("ADD", &[], &garbage), 6);
    assert_eq!(
        code("ADD", &[], &json!({ "cniVersion": "9.0.0", "name": "n" })),
        1
    );
    assert_eq!(code("ADD", &[], &json!({ "cniVersion": "1.0.0" })), 7);
    // The environment.
    assert_eq!(code("ADD", &[("CNI_NETNS", "")], &stdin), 4);
    assert_eq!(code("ADD", &[("CNI_ARGS", "broken")], &stdin), 4);
    // Ports: a container port that is also one of its own, a foreign hostIP,
    // outside the agent's ports.
    let ambiguous = with_ports(
        stdin.clone(),
        json!([
            { "hostPort": 31080, "containerPort": 31081 },
            { "hostPort": 31081, "containerPort": 31081 },
        ]),
    );
    assert_eq!(code("ADD", &[], &ambiguous), 101);
    let foreign = with_ports(
        stdin.clone(),
        json!([{ "hostPort": 31080, "containerPort": 31080, "hostIP": "127.0.0.1" }]),
    );
    assert_eq!(code("ADD", &[], &foreign), 7);
    assert_eq!(code("ADD", &[("CNI_ARGS", "NETISO_PORTS=80")], &stdin), 7);
    // Ports another attachment has.
    let first = Sandbox::new(&lab, "first");
    let taken = [("CNI_ARGS", "NETISO_PORTS=31500")];
    assert!(first.run(&lab, "ADD", &taken, &stdin).ok);
    let conflict = sandbox.run(&lab, "ADD", &taken, &stdin);
    assert_eq!(conflict.code(), 101);
    assert!(
        conflict.out["msg"].as_str().unwrap().contains("31500"),
        "{}",
        conflict.out
    );
    // An interface of that name already in the namespace.
    sandbox.netns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    let exists = sandbox.run(&lab, "ADD", &[], &stdin);
    assert_eq!(exists.code(), 101);
    assert!(
        exists.out["msg"].as_str().unwrap().contains("eth0"),
        "{}",
        exists.out
    );
    sandbox.netns.ip(&["link", "del", "eth0"]);
    // The same attachment twice.
    let again = first.run(&lab, "ADD", &[], &stdin);
    assert_eq!(again.code(), 101, "{}", again.out);
    assert_eq!(list(&lab).as_array().unwrap().len(), 1);
    assert_holds_only_live_containers(&lab, &list(&lab), "after the refused ADDs");
    // The agent down: try again later, and STATUS says it is not available.
    assert!(first.run(&lab, "DEL", &[], &stdin).ok);
    let status_stdin = config(&lab, "1.1.0", "netiso");
    assert!(plugin(&lab, "STATUS", &[], &status_stdin).ok);
    assert!(agent.stop());
    assert_eq!(code("ADD", &[], &stdin), 11);
    assert_eq!(code("DEL", &[], &stdin), 11);
    let status = plugin(&lab, "STATUS", &[], &status_stdin);
    assert_eq!(status.code(), 50);
    // STATUS and GC are 1.1.0's.
    assert_eq!(plugin(&lab, "STATUS", &[], &stdin).code(), 1);
}

#[test]
fn gc_removes_only_this_networks_stale_attachments() {
    let Some(lab) = logic_lab() else { return };
    let _agent = Agent::start(&lab, &[]);
    let ours = config(&lab, "1.1.0", "netiso");
    let theirs = config(&lab, "1.1.0", "other");
    let kept = Sandbox::new(&lab, "kept");
    let stale = Sandbox::new(&lab, "stale");
    let other = Sandbox::new(&lab, "other");
    assert!(kept.run(&lab, "ADD", &[], &ours).ok);
    assert!(stale.run(&lab, "ADD", &[], &ours).ok);
    let on_other = other.run(&lab, "ADD", &[], &theirs);
    assert!(on_other.ok, "{}", on_other.err);
    let cli_id = lab.container_id("cli");
    let (ok, _, stderr) = cli(&lab, &["container", "create", &cli_id]);
    assert!(ok, "{stderr}");
    let mut gc = ours.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": kept.id, "ifname": "eth0" }]);
    let collected = plugin(&lab, "GC", &[], &gc);
    assert!(collected.ok, "{} {}", collected.out, collected.err);
    let containers = list(&lab);
    let mut left: Vec<String> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["attachment"]["container_id"]
                .as_str()
                .unwrap_or("cli")
                .to_owned()
        })
        .collect();
    left.sort();
    let mut expected = vec![kept.id.clone(), other.id.clone(), "cli".to_owned()];
    expected.sort();
    assert_eq!(left, expected);
    assert_holds_only_live_containers(&lab, &containers, "after GC");
}

#[test]
fn fifty_parallel_adds_get_disjoint_ports_and_fifty_dels_leave_nothing() {
    const N: u16 = 50;
    let Some(lab) = logic_lab() else { return };
    let _agent = Agent::start(&lab, &[]);
    let stdin = config(&lab, "1.0.0", "netiso");
    let sandboxes: Vec<Sandbox> = (0..N)
        .map(|i| Sandbox::new(&lab, &format!("p{i}")))
        .collect();
    let in_parallel = |command: &'static str| {
        std::thread::scope(|scope| {
            let runs: Vec<_> = sandboxes
                .iter()
                .zip(0..N)
                .map(|(sandbox, i)| {
                    let (lab, stdin) = (&lab, &stdin);
                    scope.spawn(move || {
                        let ports = format!("NETISO_PORTS={}", 31000 + 10 * i);
                        sandbox.run(lab, command, &[("CNI_ARGS", &ports)], stdin)
                    })
                })
                .collect();
            for run in runs {
                let run = run.join().unwrap();
                assert!(run.ok, "{command}: {} {}", run.out, run.err);
            }
        });
    };
    in_parallel("ADD");
    let containers = list(&lab);
    let containers = containers.as_array().unwrap();
    assert_eq!(containers.len(), usize::from(N));
    let mut owned: Vec<(u64, u64)> = containers
        .iter()
        .flat_map(|c| {
            let ranges = c["ports"].as_array().unwrap().iter().cloned();
            ranges.chain([c["ephemeral_ports"].clone()])
        })
        .map(|r| (r["begin"].as_u64().unwrap(), r["end"].as_u64().unwrap()))
        .collect();
    owned.sort_unstable();
    assert_eq!(owned.len(), 2 * usize::from(N));
    for pair in owned.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping ranges {pair:?}");
    }
    in_parallel("DEL");
    assert_holds_only_live_containers(&lab, &list(&lab), "after 50 parallel DELs");
}

#[test]
fn bandwidth_sets_the_limits_of_the_attachment_and_they_survive_a_restart() {
    let lab = Lab::new();
    // The agent's own limits: the attachment's override them.
    let flags = [
        "--egress_rate_limit_per_container=50000B",
        "--ingress_rate_limit_per_container=50000B",
        "--minimum_ingress_rate_limit=0B",
        "--minimum_egress_rate_limit=0B",
    ];
    let agent = Agent::start(&lab, &flags);
    let web = Sandbox::new(&lab, "web");
    let mut stdin = config(&lab, "1.0.0", "netiso");
    stdin["runtimeConfig"] = json!({
        "bandwidth": { "ingressRate": 800_000, "ingressBurst": 80_000, "egressRate": 1_600_000 }
    });
    let added = web.run(&lab, "ADD", &[], &stdin);
    assert!(added.ok, "{} {}", added.out, added.err);
    let host_veth = added.out["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let limits = |lab: &Lab| {
        (
            htb_class(&lab.host, &host_veth).map(|(rate, _)| rate),
            htb_class(&web.netns, "eth0").map(|(rate, _)| rate),
        )
    };
    assert_eq!(
        limits(&lab),
        (Some(100_000), Some(200_000)),
        "ingress, egress"
    );
    // A container without limits of its own gets the agent's.
    let plain = Sandbox::new(&lab, "plain");
    let plain_stdin = config(&lab, "1.0.0", "netiso");
    assert!(plain.run(&lab, "ADD", &[], &plain_stdin).ok);
    assert_eq!(
        htb_class(&plain.netns, "eth0").map(|(rate, _)| rate),
        Some(50_000)
    );
    drop(agent);
    let _agent = Agent::start(&lab, &flags);
    assert_eq!(
        limits(&lab),
        (Some(100_000), Some(200_000)),
        "after a restart"
    );
    assert!(web.run(&lab, "DEL", &[], &stdin).ok);
    assert!(plain.run(&lab, "DEL", &[], &plain_stdin).ok);
}

#[test]
fn a_published_port_reaches_the_container_port_from_everywhere() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = Sandbox::new(&lab, "web");
    let stdin = with_ports(
        config(&lab, "1.0.0", "netiso"),
        json!([
            { "hostPort": 31080, "containerPort": 80, "protocol": "tcp" },
            { "hostPort": 31080, "containerPort": 80, "protocol": "udp" },
        ]),
    );
    let added = web.run(&lab, "ADD", &[], &stdin);
    assert!(added.ok, "{} {}", added.out, added.err);
    let containers = list(&lab);
    assert_eq!(
        containers[0]["port_mappings"],
        json!([{ "host_port": 31080, "container_port": 80 }])
    );
    let client = Sandbox::new(&lab, "client");
    let client_stdin = config(&lab, "1.0.0", "netiso");
    assert!(client.run(&lab, "ADD", &[], &client_stdin).ok);
    let localhost = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let localhost6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let cases: [(&Netns, IpAddr, &str); 10] = [
        (&lab.remote, IpAddr::V4(HOST_IPV4), "the remote over IPv4"),
        (&lab.remote, IpAddr::V6(HOST_IPV6), "the remote over IPv6"),
        (&lab.host, IpAddr::V4(HOST_IPV4), "the host at its address"),
        (&lab.host, localhost, "the host at 127.0.0.1"),
        (&client.netns, IpAddr::V4(HOST_IPV4), "another container"),
        (&client.netns, localhost, "another container at 127.0.0.1"),
        (
            &web.netns,
            IpAddr::V4(HOST_IPV4),
            "itself at the host address",
        ),
        (&web.netns, localhost, "itself at 127.0.0.1"),
        (
            &web.netns,
            IpAddr::V6(HOST_IPV6),
            "itself at the host IPv6 address",
        ),
        (&web.netns, localhost6, "itself at ::1"),
    ];
    for (from, to, what) in cases {
        // The service listens on port 80 only; a whole TCP exchange (handshake, data,
        // close) needs both directions translated.
        let server = start_tcp_listener(&web.netns, to, 80);
        assert!(send_tcp(from, SocketAddr::new(to, 31080), what), "{what}");
        assert_eq!(
            String::from_utf8_lossy(&server.wait_with_output().stdout),
            what
        );
    }
    // Straight to the container port from inside, as before, after the same client
    // ports may have asked for the host port.
    for to in [localhost, IpAddr::V4(HOST_IPV4)] {
        let server = start_tcp_listener(&web.netns, to, 80);
        assert!(send_tcp(&web.netns, SocketAddr::new(to, 80), "direct"));
        assert_eq!(
            String::from_utf8_lossy(&server.wait_with_output().stdout),
            "direct"
        );
    }
    assert!(web.run(&lab, "DEL", &[], &stdin).ok);
    assert!(client.run(&lab, "DEL", &[], &client_stdin).ok);
    assert_holds_only_live_containers(&lab, &list(&lab), "after DEL");
}

#[test]
fn check_finds_what_changed_since_add() {
    let Some(lab) = logic_lab() else { return };
    let _agent = Agent::start(&lab, &[]);
    let web = Sandbox::new(&lab, "web");
    let stdin = with_ports(
        config(&lab, "1.0.0", "netiso"),
        json!([{ "hostPort": 31080, "containerPort": 80, "protocol": "tcp" }]),
    );
    assert!(web.run(&lab, "ADD", &[], &stdin).ok);
    let check = || web.run(&lab, "CHECK", &[], &stdin);
    assert!(check().ok, "{}", check().out);
    // A port's map entry given back to the host, then its translation cleared.
    let pinned =
        |name: &str| aya::maps::MapData::from_pin(lab.pin_root().join(name)).expect("a pinned map");
    let mut owners: aya::maps::Array<_, netiso_common::PortOwner> =
        aya::maps::Array::try_from(aya::maps::Map::Array(pinned("PORT_OWNERS"))).unwrap();
    let entry = owners.get(&31080, 0).unwrap();
    owners
        .set(31080, netiso_common::PortOwner::default(), 0)
        .unwrap();
    let broken = check();
    assert_eq!(broken.code(), 102);
    assert!(
        broken.out["msg"]
            .as_str()
            .unwrap()
            .contains("1 of its ports"),
        "{}",
        broken.out
    );
    owners.set(31080, entry, 0).unwrap();
    let mut translations: aya::maps::Array<_, u16> =
        aya::maps::Array::try_from(aya::maps::Map::Array(pinned("PORT_TRANSLATIONS"))).unwrap();
    translations.set(31080, 0, 0).unwrap();
    let broken = check();
    assert_eq!(broken.code(), 102);
    assert!(
        broken.out["msg"]
            .as_str()
            .unwrap()
            .contains("not translated"),
        "{}",
        broken.out
    );
    translations.set(31080, 80, 0).unwrap();
    assert!(check().ok);
    // Inside: an address, then the interface.
    web.netns
        .ip(&["addr", "del", &format!("{HOST_IPV6}/128"), "dev", "eth0"]);
    let broken = check();
    assert_eq!(broken.code(), 102);
    assert!(
        broken.out["msg"].as_str().unwrap().contains("2001:db8::1"),
        "{}",
        broken.out
    );
    web.netns.ip(&["link", "del", "eth0"]);
    let broken = check();
    assert!(
        broken.out["msg"].as_str().unwrap().contains("eth0 is gone"),
        "{}",
        broken.out
    );
    // DEL still cleans up after all that.
    assert!(web.run(&lab, "DEL", &[], &stdin).ok);
    assert_holds_only_live_containers(&lab, &list(&lab), "after DEL");
}
