//! Faults a real agent must survive with nothing lost and nothing leaked: a failed
//! adoption, a rejected update, a failed destroy, a failing step anywhere in create,
//! update and destroy (failpoints), a crash between any two steps, a panicking
//! manager; and typed errors with their statuses and exit codes.
use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use netiso::failpoints;
use netiso_tests::{
    agent::{Agent, api_request, cli, cli_status},
    lab::{HOST_IPV4, Lab, send_tcp, start_tcp_listener},
    leaks::assert_holds_only_live_containers,
    netns::Netns,
};

/// Whether a TCP connection from the remote to the host's address at `port` reaches
/// a listener in container `id`.
fn serves_from_remote(lab: &Lab, id: &str, port: u16) -> bool {
    let container = Netns::existing(&format!("netiso-{id}"));
    let server = start_tcp_listener(&container, IpAddr::V4(HOST_IPV4), port);
    let sent = send_tcp(
        &lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), port),
        "hi",
    );
    sent && server.wait_with_output().stdout == b"hi"
}

fn list(lab: &Lab) -> serde_json::Value {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    list
}

/// The namespace-wide sysctls netiso changes in an adopted namespace.
const ADOPTED_SYSCTLS: [&str; 4] = [
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/lo/route_localnet",
    "net/ipv4/conf/lo/accept_local",
    "net/ipv4/ip_local_port_range",
];

fn sysctls(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        ADOPTED_SYSCTLS
            .iter()
            .map(|key| {
                fs::read_to_string(Path::new("/proc/sys").join(key))
                    .unwrap()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    })
}

/// A runtime's namespace for adoption, with sysctls unlike netiso's.
fn runtime_namespace(lab: &Lab, name: &str) -> Netns {
    let ns = Netns::create(&format!("rt-{}-{name}", lab.id));
    for key in [
        "net.ipv4.conf.all.rp_filter=1",
        "net.ipv4.ip_local_port_range=40000 40100",
    ] {
        ns.exec(&["sysctl", "-qw", key]);
    }
    ns
}

#[test]
fn a_failed_adoption_is_undone_and_a_foreign_veth_name_blocks_nothing() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    // A runtime namespace with an IPv6 default route of its own: netiso's IPv6 route
    // fails there, after its veth is made and configured half-way.
    let runtime = runtime_namespace(&lab, "a");
    runtime.ip(&[
        "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
    ]);
    runtime.ip(&["link", "set", "dummy0", "up"]);
    runtime.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:9::2/64",
        "dev",
        "dummy0",
        "nodad",
    ]);
    runtime.ip(&["-6", "route", "add", "default", "via", "2001:db8:9::1"]);
    let before = sysctls(&runtime);
    let id = lab.container_id("adopted");
    let netns = format!("/run/netns/{}", runtime.name());
    let adopt = |ports: &str| {
        let args = [
            "container",
            "create",
            &id,
            "--netns",
            &netns,
            "--ports",
            ports,
        ];
        args.map(str::to_owned)
    };
    let args = adopt("31000-31009");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = cli_status(&lab, &args);
    assert_eq!(code, 5, "a conflict: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already has a default route"), "{stderr}");
    assert_eq!(sysctls(&runtime), before, "its sysctls are put back");
    assert!(
        !runtime
            .command("ip")
            .args(["link", "show", "eth0"])
            .output()
            .unwrap()
            .status
            .success(),
        "its eth0 is gone"
    );
    assert_holds_only_live_containers(&lab, &serde_json::json!([]), "after the failed adoption");

    // A link named like the first veth, someone else's, is left alone and skipped.
    lab.host.ip(&[
        "link", "add", "netiso0", "type", "veth", "peer", "name", "foreign0",
    ]);
    let other = lab.container_id("other");
    let (ok, created, stderr) = cli(
        &lab,
        &["container", "create", &other, "--ports", "31000-31009"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["host_veth"], "netiso1");
    assert!(serves_from_remote(&lab, &other, 31005));
    lab.host.ip(&["link", "del", "netiso0"]);

    // Without the route the adoption works, and destroying puts the sysctls back.
    runtime.ip(&["-6", "route", "del", "default"]);
    let args = adopt("31010-31019");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = cli(&lab, &args);
    assert!(ok, "{stderr}");
    assert_ne!(sysctls(&runtime), before);
    assert!(serves_from_remote(&lab, &id, 31015));
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &id]);
    assert!(ok, "{stderr}");
    assert_eq!(sysctls(&runtime), before, "destroy puts its sysctls back");
    assert!(
        runtime
            .exec(&["ip", "link", "show", "dummy0"])
            .status
            .success()
    );
}

#[test]
fn a_rejected_update_changes_nothing_and_restarts_keep_every_container() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let a = lab.container_id("a");
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31099"]).0);
    let answer = api_request(
        &lab,
        "PUT",
        &format!("/v1/containers/{a}"),
        r#"{"ports":[{"begin":31000,"end":31009}],"cpus":-1}"#,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    let listed = list(&lab);
    assert_eq!(
        listed[0]["ports"],
        serde_json::json!([{"begin": 31000, "end": 31099}])
    );
    assert!(
        serves_from_remote(&lab, &a, 31050),
        "the datapath kept its ports"
    );
    let b = lab.container_id("b");
    let (code, stderr) = cli_status(&lab, &["container", "create", &b, "--ports", "31050"]);
    assert_eq!(code, 5, "its ports are still its own: {stderr}");
    assert!(cli(&lab, &["container", "create", &b, "--ports", "31100-31109"]).0);
    agent.kill();

    // Records that claim the same ports (as an interrupted update by an older agent
    // could leave): both containers are recovered, the clash is reported.
    let record = lab.state_dir().join(format!("containers/{b}.json"));
    let mut b_record: serde_json::Value =
        serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    b_record["ports"] = serde_json::json!([{"begin": 31090, "end": 31109}]);
    fs::write(&record, b_record.to_string()).unwrap();
    let agent = Agent::start(&lab, &[]);
    let listed = list(&lab);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let ports_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["ports"].clone())
            .unwrap()
    };
    let a_ports = ports_of(&a);
    let b_ports = ports_of(&b);
    // Whichever was recovered first keeps 31090-31099; the other keeps the rest.
    let union: Vec<serde_json::Value> = [a_ports, b_ports]
        .iter()
        .flat_map(|p| p.as_array().unwrap().clone())
        .collect();
    let total: u64 = union
        .iter()
        .map(|r| r["end"].as_u64().unwrap() - r["begin"].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(total, 110, "every port once: {union:?}");
    assert_holds_only_live_containers(&lab, &listed, "after recovering a conflict");
    assert!(agent.wait_for_log("is also recorded for container").0);
    assert!(serves_from_remote(&lab, &b, 31105));
}

#[test]
fn a_failed_destroy_keeps_the_container_until_a_retry_succeeds() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let failpoints = Failpoints::new(&lab);
    let _agent = failpoints.start_agent(&lab, &[]);
    let a = lab.container_id("a");
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31009"]).0);
    failpoints.arm("destroy.netns", "error");
    let (code, stderr) = cli_status(&lab, &["container", "destroy", &a]);
    assert_eq!(code, 1, "an internal failure: {stderr}");
    assert!(stderr.contains("failpoint destroy.netns"), "{stderr}");
    let listed = list(&lab);
    assert_eq!(listed[0]["id"], a.as_str(), "still known, still recorded");
    assert!(
        lab.state_dir()
            .join(format!("containers/{a}.json"))
            .exists()
    );
    let b = lab.container_id("b");
    let (code, _) = cli_status(&lab, &["container", "create", &b, "--ports", "31005"]);
    assert_eq!(code, 5, "its ports are not given away");
    failpoints.disarm();
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &a]);
    assert!(ok, "the retry finishes the job: {stderr}");
    assert_holds_only_live_containers(&lab, &serde_json::json!([]), "after the retry");
    assert!(cli(&lab, &["container", "create", &b, "--ports", "31005"]).0);
}

#[test]
fn errors_have_the_status_and_exit_code_of_their_kind() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    // Room for two containers' ephemeral ranges only.
    let _agent = Agent::start(
        &lab,
        &[
            "--resources",
            "ports:[31000-32000];ephemeral_ports:[30000-30031]",
        ],
    );
    let a = lab.container_id("a");
    // Ids of the lab, so that a regression that creates them leaves nothing behind.
    let x = lab.container_id("x");
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31009"]).0);
    let post =
        |body: serde_json::Value| api_request(&lab, "POST", "/v1/containers", body.to_string());
    let cases = [
        (
            post(serde_json::json!({"id": "bad id!"})).status,
            400,
            "invalid id",
        ),
        (
            post(serde_json::json!({"id": a})).status,
            409,
            "existing id",
        ),
        (
            post(serde_json::json!({"id": x, "ports": [{"begin": 31005, "end": 31005}]})).status,
            409,
            "ports taken",
        ),
        (
            post(serde_json::json!({"id": x, "ports": [{"begin": 20, "end": 20}]})).status,
            400,
            "ports not the agent's",
        ),
        (
            post(serde_json::json!({"id": x, "ports": [{"begin": 31500, "end": 31400}]})).status,
            400,
            "an empty range",
        ),
        (
            api_request(&lab, "PUT", "/v1/containers/nobody", r#"{"cpus":1}"#).status,
            404,
            "unknown id on update",
        ),
        (
            post(serde_json::json!({"id": x, "labels": {"big": "v".repeat(2000)}})).status,
            413,
            "a label too large",
        ),
    ];
    for (got, want, what) in cases {
        assert_eq!(got, want, "{what}");
    }
    assert!(cli(&lab, &["container", "create", &lab.container_id("b")]).0);
    assert_eq!(
        post(serde_json::json!({"id": lab.container_id("c")})).status,
        503,
        "ephemeral ranges used up"
    );
    let exit_codes = [
        (cli_status(&lab, &["container", "create", "bad id!"]).0, 3),
        (
            cli_status(&lab, &["container", "update", "nobody", "--cpus", "1"]).0,
            4,
        ),
        (cli_status(&lab, &["container", "create", &a]).0, 5),
        (
            cli_status(&lab, &["container", "create", &lab.container_id("c")]).0,
            7,
        ),
        (
            cli_status(&lab, &["container", "create", &x, "--ports", "99999"]).0,
            3,
        ),
    ];
    for (i, (got, want)) in exit_codes.into_iter().enumerate() {
        assert_eq!(got, want, "case {i}");
    }
    let socket = format!("{}.nobody", lab.api_socket().display());
    let output = lab
        .host
        .command(netiso_tests::agent::netiso_bin())
        .args(["container", "list", "--api-socket", &socket])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "no agent: try again later");
}

#[test]
fn a_panicking_manager_stops_the_agent_and_a_restart_recovers() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start_with_env(&lab, &[], &[("NETISO_FAILPOINTS", "create.attach=panic")]);
    let a = lab.container_id("a");
    let (code, _) = cli_status(&lab, &["container", "create", &a, "--ports", "31000-31009"]);
    assert_ne!(code, 0);
    let (status, log) = agent.wait_exit();
    assert_eq!(status.code(), Some(70), "{log}");
    assert!(log.contains("the container manager failed"), "{log}");
    let _agent = Agent::start(&lab, &[]);
    assert_holds_only_live_containers(&lab, &list(&lab), "after the restart");
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31009"]).0);
    assert!(serves_from_remote(&lab, &a, 31001));
}

/// Rate limits that follow `--cpus`, so that updates reshape both directions.
const RATES_PER_CPU: [&str; 3] = [
    "--resources=ports:[31000-32000];ephemeral_ports:[30001-30999];cpus:8",
    "--egress_rate_per_cpu=10MB",
    "--ingress_rate_per_cpu=10MB",
];

/// The failpoints file of a lab's agents (`NETISO_FAILPOINTS_FILE`), armed and
/// disarmed while they run; removed when dropped.
struct Failpoints(std::path::PathBuf);

impl Failpoints {
    fn new(lab: &Lab) -> Self {
        Self(lab.state_dir().with_extension("failpoints"))
    }

    /// Starts the lab's agent with `args`, reading this file.
    fn start_agent(&self, lab: &Lab, args: &[&str]) -> Agent {
        let path = self.0.display().to_string();
        Agent::start_with_env(lab, args, &[("NETISO_FAILPOINTS_FILE", &path)])
    }

    /// Makes `point` do `action` (`error`, `panic`, `crash`).
    fn arm(&self, point: &str, action: &str) {
        fs::write(&self.0, format!("{point}={action}")).unwrap();
    }

    fn disarm(&self) {
        fs::write(&self.0, "").unwrap();
    }
}

impl Drop for Failpoints {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn a_failing_step_anywhere_in_create_update_or_destroy_leaves_nothing() {
    let lab = Lab::new();
    let failpoints = Failpoints::new(&lab);
    let _agent = failpoints.start_agent(&lab, &RATES_PER_CPU);
    // A container that lives through it all, and an adopted namespace.
    let keep = lab.container_id("keep");
    assert!(
        cli(
            &lab,
            &["container", "create", &keep, "--ports", "31900-31909"]
        )
        .0
    );
    let runtime = runtime_namespace(&lab, "f");
    let before = sysctls(&runtime);
    let netns = format!("/run/netns/{}", runtime.name());
    let a = lab.container_id("a");
    for adopt in [false, true] {
        for point in failpoints::CREATE {
            failpoints.arm(point, "error");
            let mut args = vec!["container", "create", &a, "--ports", "31000-31009"];
            if adopt {
                args.extend(["--netns", &netns]);
            }
            let (code, stderr) = cli_status(&lab, &args);
            assert_eq!(code, 1, "{point}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{point}: {stderr}");
            assert_holds_only_live_containers(&lab, &list(&lab), point);
            if adopt {
                assert_eq!(sysctls(&runtime), before, "{point}: sysctls put back");
            }
        }
    }
    failpoints.disarm();
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31009"]).0);
    for point in failpoints::UPDATE {
        failpoints.arm(point, "error");
        let args = [
            "container",
            "update",
            &a,
            "--ports",
            "31010-31019",
            "--cpus",
            "2",
        ];
        let (code, stderr) = cli_status(&lab, &args);
        assert_eq!(code, 1, "{point}: {stderr}");
        let listed = list(&lab);
        let a_now = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == a.as_str())
            .unwrap();
        assert_eq!(
            a_now["ports"],
            serde_json::json!([{"begin": 31000, "end": 31009}]),
            "{point}"
        );
        assert!(a_now.get("cpus").is_none(), "{point}");
        assert_holds_only_live_containers(&lab, &listed, point);
        failpoints.disarm();
        assert!(serves_from_remote(&lab, &a, 31001), "{point}: still served");
    }
    destroy_fails_at_each_point(&lab, &failpoints, &a, failpoints::DESTROY_MADE_NAMESPACE);
    assert!(cli(&lab, &["container", "destroy", &a]).0);
    assert_holds_only_live_containers(&lab, &list(&lab), "after destroy");
    // The same in an adopted namespace, whose destroy also puts its sysctls back.
    let adopted = [
        "container",
        "create",
        &a,
        "--ports",
        "31000-31009",
        "--netns",
        &netns,
    ];
    assert!(cli(&lab, &adopted).0);
    destroy_fails_at_each_point(&lab, &failpoints, &a, failpoints::DESTROY);
    assert!(cli(&lab, &["container", "destroy", &a]).0);
    assert_holds_only_live_containers(&lab, &list(&lab), "after destroying the adopted one");
    assert_eq!(sysctls(&runtime), before, "sysctls put back");
    assert!(serves_from_remote(&lab, &keep, 31901));
}

/// Fails the destroy of container `id` at each of `points` in turn: each time it
/// stays listed (beside the lab's other container). Disarms the failpoints after.
fn destroy_fails_at_each_point(lab: &Lab, failpoints: &Failpoints, id: &str, points: &[&str]) {
    for point in points {
        failpoints.arm(point, "error");
        let (code, stderr) = cli_status(lab, &["container", "destroy", id]);
        assert_eq!(code, 1, "{point}: {stderr}");
        assert_eq!(
            list(lab).as_array().unwrap().len(),
            2,
            "{point}: still listed"
        );
    }
    failpoints.disarm();
}

#[test]
fn a_crash_between_any_two_steps_leaves_each_container_whole_or_gone() {
    if netiso_tests::skipped_in_vm("dozens of agent restarts are too slow under emulation") {
        return;
    }
    let lab = Lab::new();
    let failpoints = Failpoints::new(&lab);
    let args = RATES_PER_CPU;
    let keep = lab.container_id("keep");
    let a = lab.container_id("a");
    {
        let _agent = failpoints.start_agent(&lab, &args);
        assert!(
            cli(
                &lab,
                &["container", "create", &keep, "--ports", "31900-31909"]
            )
            .0
        );
    }
    let operations: Vec<(&str, Vec<&str>)> = [
        (
            failpoints::CREATE,
            vec!["container", "create", &a, "--ports", "31000-31009"],
        ),
        (
            failpoints::UPDATE,
            vec![
                "container",
                "update",
                &a,
                "--ports",
                "31005-31019",
                "--cpus",
                "2",
            ],
        ),
        (
            failpoints::DESTROY_MADE_NAMESPACE,
            vec!["container", "destroy", &a],
        ),
    ]
    .into_iter()
    .flat_map(|(points, command)| points.iter().map(move |p| (*p, command.clone())))
    .collect();
    for (point, command) in operations {
        let agent = failpoints.start_agent(&lab, &args);
        // Each operation starts from its own state: a exists for update and destroy.
        let exists = list(&lab)
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == a.as_str());
        if point.starts_with("create") == exists {
            let setup: &[&str] = if exists {
                &["container", "destroy", &a]
            } else {
                &["container", "create", &a, "--ports", "31000-31009"]
            };
            assert!(cli(&lab, setup).0, "{point}: setting up");
        }
        failpoints.arm(point, "crash");
        let (code, stderr) = cli_status(&lab, &command);
        assert_ne!(code, 0, "{point}: {stderr}");
        let (status, _) = agent.wait_exit();
        assert_eq!(status.code(), None, "{point}: killed");
        failpoints.disarm();
        let _agent = failpoints.start_agent(&lab, &args);
        let listed = list(&lab);
        assert_holds_only_live_containers(&lab, &listed, point);
        let a_now = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == a.as_str())
            .cloned();
        if let Some(a_now) = a_now {
            // Whole: it serves its first port, whichever ports it has now.
            let first = a_now["ports"][0]["begin"].as_u64().unwrap();
            assert!(
                serves_from_remote(&lab, &a, u16::try_from(first).unwrap()),
                "{point}: {a_now}"
            );
        }
        assert!(
            serves_from_remote(&lab, &keep, 31901),
            "{point}: the other is untouched"
        );
    }
}
