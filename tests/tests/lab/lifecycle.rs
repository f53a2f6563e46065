//! The container lifecycle through the CLI and the control API of a real agent:
//! create (new or adopted namespaces), list, destroy, port allocation, exhaustion, and
//! errors that leave nothing behind.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use netiso_tests::{
    agent::{Agent, cli, run_netiso},
    lab::{HOST_IPV4, Lab, send_tcp, start_tcp_listener},
    netns::{ChildGuard, Netns},
};

fn netns_exists(id: &str) -> bool {
    Path::new(&format!("/run/netns/netiso-{id}")).exists()
}

pub(super) fn reachable_from_remote(lab: &Lab, container: &Netns, port: u16) -> bool {
    let server = start_tcp_listener(container, IpAddr::V4(HOST_IPV4), port);
    let sent = send_tcp(
        &lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), port),
        "hi",
    );
    sent && server.wait_with_output().stdout == b"hi"
}

#[test]
fn create_list_and_destroy_through_the_cli() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = lab.container_id("web");
    let (ok, created, stderr) = cli(
        &lab,
        &[
            "container",
            "create",
            &web,
            "--ports",
            "31000-31099",
            "--label",
            "app=web",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["id"], web.as_str());
    assert_eq!(created["netns"], format!("/run/netns/netiso-{web}"));
    assert_eq!(
        created["ephemeral_ports"],
        serde_json::json!({"begin": 30016, "end": 30031})
    );
    assert_eq!(
        created["ports"],
        serde_json::json!([{"begin": 31000, "end": 31099}])
    );
    assert_eq!(created["host_veth"], "netiso0");
    assert_eq!(created["labels"]["app"], "web");
    let container = Netns::existing(&format!("netiso-{web}"));
    assert!(reachable_from_remote(&lab, &container, 31050));
    let range = container.exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    assert_eq!(
        String::from_utf8_lossy(&range.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["30016", "30031"]
    );
    let state = lab
        .state_dir()
        .join("containers")
        .join(format!("{web}.json"));
    assert!(state.exists(), "recorded in the state directory");

    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], web.as_str());

    drop(container);
    let (ok, destroyed, stderr) = cli(&lab, &["container", "destroy", &web]);
    assert!(ok, "{stderr}");
    assert_eq!(destroyed["destroyed"], web.as_str());
    assert!(!netns_exists(&web), "namespace removed");
    // Deleted in the background, soon after the answer.
    netiso_tests::wait::wait_until(
        "the veth's removal",
        std::time::Duration::from_secs(10),
        || {
            let links = lab.host.exec(&["ip", "-o", "link", "show"]);
            !String::from_utf8_lossy(&links.stdout).contains("netiso0")
        },
    );
    assert!(!state.exists(), "state removed");
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(list, serde_json::json!([]));
    // Destroying again is fine: destroy is idempotent.
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &web]);
    assert!(ok, "{stderr}");
}

#[test]
fn bad_requests_fail_with_one_line_and_leave_nothing() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let first = lab.container_id("first");
    assert!(
        cli(
            &lab,
            &["container", "create", &first, "--ports", "31000-31099"]
        )
        .0
    );
    let other = lab.container_id("other");
    for (args, message) in [
        (
            vec!["--ports", "40000-40010"],
            "Some non-ephemeral ports specified in [40000-40010] are not managed by the agent; it manages [31000-32000]".to_owned(),
        ),
        (
            vec!["--ports", "31050-31200"],
            format!("ports [31050-31200] overlap ports of container {first}"),
        ),
        (vec!["--ports", "31100-31000"], "port range 31100-31000 is empty: its begin is after its end".to_owned()),
        (
            vec!["--netns", "/etc/hostname"],
            "/etc/hostname is not a network namespace; pass a namespace file such as /run/netns/NAME or /proc/PID/ns/net".to_owned(),
        ),
    ] {
        let mut all = vec!["container", "create", other.as_str()];
        all.extend(args);
        let (ok, _, stderr) = cli(&lab, &all);
        assert!(!ok);
        assert_eq!(stderr.trim(), format!("netiso: error: {message}"));
        assert!(!netns_exists(&other), "nothing left after: {message}");
    }
    let (ok, _, stderr) = cli(&lab, &["container", "create", &first]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!(
            "netiso: error: container {first} already exists; destroy it first or choose another id"
        )
    );
    let (ok, _, stderr) = cli(&lab, &["container", "create", "bad/id"]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: container id 'bad/id' is invalid: use 1 to 64 letters, digits, '-', '_' or '.'"
    );
    // The failed requests took no ephemeral range: the next container gets the second.
    let second = lab.container_id("second");
    let (ok, created, _) = cli(&lab, &["container", "create", &second]);
    assert!(ok);
    assert_eq!(created["ephemeral_ports"]["begin"], 30032);
}

#[test]
fn exhausted_ephemeral_ports_refuse_a_container_cleanly() {
    let lab = Lab::new();
    // Room for two ephemeral ranges of 16 ports.
    let _agent = Agent::start(
        &lab,
        &["--resources=ports:[31000-32000];ephemeral_ports:[30016-30047]"],
    );
    for name in ["a", "b"] {
        assert!(cli(&lab, &["container", "create", &lab.container_id(name)]).0);
    }
    let third = lab.container_id("c");
    let (ok, _, stderr) = cli(&lab, &["container", "create", &third]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: Failed to allocate ephemeral ports: all 2 ranges of 16 ports are in use; destroy a container or widen ephemeral_ports in --resources"
    );
    assert!(!netns_exists(&third));
    // Destroying one makes room again.
    assert!(cli(&lab, &["container", "destroy", &lab.container_id("a")]).0);
    let (ok, created, _) = cli(&lab, &["container", "create", &third]);
    assert!(ok);
    assert_eq!(created["ephemeral_ports"]["begin"], 30016);
}

#[test]
fn existing_namespaces_are_adopted_and_outlive_their_container() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    // A runtime's named namespace.
    let runtime_ns = Netns::create(&format!("netiso-lab-{}-runtime", lab.id));
    let named = lab.container_id("named");
    let (ok, created, stderr) = cli(
        &lab,
        &[
            "container",
            "create",
            &named,
            "--ports",
            "31200",
            "--netns",
            &runtime_ns.path().display().to_string(),
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(created["adopted"], true);
    assert!(reachable_from_remote(&lab, &runtime_ns, 31200));
    assert!(cli(&lab, &["container", "destroy", &named]).0);
    let left = String::from_utf8(runtime_ns.exec(&["ip", "-o", "link", "show"]).stdout).unwrap();
    assert!(!left.contains("eth0"), "our veth is gone: {left}");
    assert!(
        runtime_ns.path().exists(),
        "the runtime's namespace lives on"
    );

    // A process's namespace, by pid.
    let mut process = ChildGuard::new(
        std::process::Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .spawn()
            .expect("unshare"),
    );
    let pid = process.child_mut().id().to_string();
    // Wait until the child is in its own namespace (unshare has exec'ed sleep).
    netiso_tests::wait::wait_until(
        "unshare to exec sleep",
        std::time::Duration::from_secs(10),
        || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"),
    );
    let by_pid = lab.container_id("bypid");
    let (ok, created, stderr) = cli(
        &lab,
        &[
            "container",
            "create",
            &by_pid,
            "--ports",
            "31300",
            "--pid",
            &pid,
        ],
    );
    assert!(ok, "{stderr}");
    let adopted = Netns::existing(&format!("netiso-{by_pid}"));
    assert!(reachable_from_remote(&lab, &adopted, 31300));
    assert_eq!(created["adopted"], true);
    drop(adopted);
    assert!(cli(&lab, &["container", "destroy", &by_pid]).0);
    assert!(!netns_exists(&by_pid), "our name for it is gone");
    assert!(
        process.child_mut().try_wait().unwrap().is_none(),
        "the process is untouched"
    );
}

/// The counters of container slot `slot`, from the pinned map.
fn counters(lab: &Lab, slot: u32) -> netiso_common::ContainerCounters {
    netiso::datapath::read_pinned_container_counters(lab.pin_root(), slot).unwrap()
}

#[test]
fn a_killed_agent_is_recovered_and_connections_never_notice() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let web = lab.container_id("web");
    assert!(
        cli(
            &lab,
            &["container", "create", &web, "--ports", "31000-31099"]
        )
        .0
    );
    let container = Netns::existing(&format!("netiso-{web}"));
    let server = container.spawn(&["iperf3", "--server", "--one-off", "--port", "31010"]);
    netiso_tests::lab::wait_for_listener(&container, netiso_tests::lab::Proto::Tcp, 31010);
    // A 3-second TCP stream from the remote, across SIGKILL and restart of the agent.
    let client = lab.remote.spawn(&[
        "iperf3",
        "--client",
        &HOST_IPV4.to_string(),
        "--port",
        "31010",
        "--time",
        "3",
        "--json",
    ]);
    netiso_tests::wait::wait_until(
        "the stream to flow",
        std::time::Duration::from_secs(10),
        || counters(&lab, 0).rx_packets > 100,
    );
    let before_kill = counters(&lab, 0);
    agent.kill();
    let _agent = Agent::start(&lab, &[]);
    let after_restart = counters(&lab, 0);
    assert!(
        after_restart.rx_packets >= before_kill.rx_packets,
        "counters never go backwards"
    );
    let report = client.wait_with_output();
    assert!(
        report.status.success(),
        "the stream survived: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("iperf3 JSON");
    assert!(json["end"]["sum_received"]["bytes"].as_u64().unwrap() > 0);
    drop(server);
    // The new agent knows the container and can destroy it.
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(list[0]["id"], web.as_str());
    drop(container);
    assert!(cli(&lab, &["container", "destroy", &web]).0);
    assert!(!netns_exists(&web));
}

#[test]
fn orphans_are_removed_when_the_state_is_lost() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let (a, b) = (lab.container_id("a"), lab.container_id("b"));
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000-31009"]).0);
    assert!(cli(&lab, &["container", "create", &b, "--ports", "31010-31019"]).0);
    assert!(agent.stop());
    std::fs::remove_dir_all(lab.state_dir()).unwrap();
    let _agent = Agent::start(&lab, &[]);
    for name in [&a, &b] {
        assert!(!netns_exists(name), "orphaned namespace {name} removed");
    }
    let links = String::from_utf8(lab.host.exec(&["ip", "-o", "link", "show"]).stdout).unwrap();
    assert!(
        !links.contains("netiso0") && !links.contains("netiso1"),
        "orphaned veths removed: {links}"
    );
    // The ports went back to the host: remote traffic to 31005 now reaches host services.
    let server = start_tcp_listener(&lab.host, IpAddr::V4(HOST_IPV4), 31005);
    assert!(send_tcp(
        &lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), 31005),
        "host"
    ));
    assert_eq!(server.wait_with_output().stdout, b"host");
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn parallel_creates_get_disjoint_ranges() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let socket = lab.api_socket().display().to_string();
    // 50 CLI processes at once, each with 10 ports of its own; 10 in the VM, where
    // each create takes seconds under emulation (the races are the same).
    let count = if netiso_tests::in_vm() { 10 } else { 50 };
    let names: Vec<String> = (0..count)
        .map(|i| lab.container_id(&format!("p{i}")))
        .collect();
    let children: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let ports = format!("{}-{}", 31000 + i * 10, 31009 + i * 10);
            lab.host
                .command(netiso_tests::agent::netiso_bin())
                .args([
                    "container",
                    "create",
                    name,
                    "--ports",
                    &ports,
                    "--api-socket",
                    &socket,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting netiso")
        })
        .collect();
    let mut ephemeral = std::collections::BTreeSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let begin = created["ephemeral_ports"]["begin"].as_u64().unwrap();
        assert!(
            ephemeral.insert(begin),
            "ephemeral range {begin} given twice"
        );
    }
    assert_eq!(ephemeral.len(), count);
    let (_, list, _) = cli(&lab, &["container", "list"]);
    assert_eq!(list.as_array().unwrap().len(), count);
}

/// The agent's open file descriptors.
#[test]
fn update_changes_ports_live_without_disturbing_kept_connections() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = lab.container_id("web");
    assert!(
        cli(
            &lab,
            &["container", "create", &web, "--ports", "31000-31009"]
        )
        .0
    );
    let container = Netns::existing(&format!("netiso-{web}"));
    // A connection on 31001 that is open across the update: the client sends its
    // second half only once the update is done (a fixed pause raced slow VMs).
    let server = start_tcp_listener(&container, IpAddr::V4(HOST_IPV4), 31001);
    let updated_flag = std::env::temp_dir().join(format!("{web}-updated"));
    let _ = std::fs::remove_file(&updated_flag);
    let client = lab.remote.spawn(&[
        "sh",
        "-c",
        &format!(
            "(printf before; for _ in $(seq 600); do [ -e {} ] && break; sleep 0.1; done; \
             printf +after) | nc -N -w 60 {HOST_IPV4} 31001",
            updated_flag.display()
        ),
    ]);
    netiso_tests::wait::wait_until(
        "the connection to be established",
        std::time::Duration::from_secs(60),
        || {
            container.run(|| {
                std::fs::read_to_string("/proc/thread-self/net/tcp")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| {
                        l.contains(&format!(":{:04X} ", 31001))
                            && l.split_whitespace().nth(3) == Some("01")
                    })
            })
        },
    );
    let (ok, updated, stderr) = cli(
        &lab,
        &["container", "update", &web, "--ports", "31001,31100-31109"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        updated["ports"],
        serde_json::json!([{"begin": 31001, "end": 31001}, {"begin": 31100, "end": 31109}])
    );
    std::fs::write(&updated_flag, b"").unwrap();
    let client_status = client.wait_with_output().status;
    let _ = std::fs::remove_file(&updated_flag);
    assert!(client_status.success());
    assert_eq!(
        server.wait_with_output().stdout,
        b"before+after",
        "the kept connection went on"
    );
    // A new port reaches the container, a dropped one the host.
    assert!(reachable_from_remote(&lab, &container, 31105));
    let host_server = start_tcp_listener(&lab.host, IpAddr::V4(HOST_IPV4), 31005);
    assert!(send_tcp(
        &lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), 31005),
        "host"
    ));
    assert_eq!(host_server.wait_with_output().stdout, b"host");
    // Another container cannot take the updated ports, and unknown ids are refused.
    let (ok, _, stderr) = cli(
        &lab,
        &[
            "container",
            "create",
            &lab.container_id("other"),
            "--ports",
            "31105",
        ],
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!("netiso: error: ports [31105-31105] overlap ports of container {web}")
    );
    let (ok, _, stderr) = cli(&lab, &["container", "update", "nosuch", "--ports", "31200"]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: no container nosuch; see `netiso container list`"
    );
}

#[test]
fn exec_runs_commands_inside_the_container() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = lab.container_id("web");
    assert!(cli(&lab, &["container", "create", &web]).0);
    let socket = lab.api_socket().display().to_string();
    let (ok, stdout, stderr) = run_netiso(
        &lab.host,
        &[
            "--api-socket",
            &socket,
            "exec",
            &web,
            "--",
            "cat",
            "/proc/sys/net/ipv4/ip_local_port_range",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.split_whitespace().collect::<Vec<_>>(),
        ["30016", "30031"]
    );
    // The command's exit status is netiso's.
    let (ok, _, _) = run_netiso(
        &lab.host,
        &["--api-socket", &socket, "exec", &web, "--", "false"],
    );
    assert!(!ok);
    let (ok, _, stderr) = run_netiso(
        &lab.host,
        &["--api-socket", &socket, "exec", "nosuch", "--", "true"],
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "netiso: error: no container nosuch; see `netiso container list`"
    );
}
