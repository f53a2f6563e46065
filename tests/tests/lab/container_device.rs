//! `--container-device`: veth and netkit containers side by side under one agent, a
//! veth container kept across a restart that gives new containers netkit, and the
//! refusal on a kernel without netkit. Which of these a kernel shows depends on it:
//! the host kernel lacks netkit, the 6.12 VM has it.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use netiso::net::container_device::probe_netkit;

use super::reachability::ping;
use netiso_tests::{
    agent::{Agent, api_request, cli, run_netiso},
    lab::{HOST_IPV4, HOST_IPV6, Lab, REMOTE_IPV4, REMOTE_IPV6, send_tcp, start_tcp_listener},
    netns::Netns,
    wait::wait_until,
};

/// The kind of the link `name` in `ns`, as `ip -d link` shows it.
fn link_kind(ns: &Netns, name: &str) -> String {
    let shown = ns.ip(&["-d", "-o", "link", "show", name]);
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    ["netkit", "veth"]
        .into_iter()
        .find(|kind| text.contains(&format!(" {kind} ")))
        .unwrap_or("other")
        .to_owned()
}

fn create(lab: &Lab, id: &str, ports: &str) -> serde_json::Value {
    let (ok, created, stderr) = cli(lab, &["container", "create", id, "--ports", ports]);
    assert!(ok, "creating {id}: {stderr}");
    created
}

/// A TCP text from `from` to `to` port `port` arrives.
fn tcp_reaches(from: &Netns, to: &Netns, address: IpAddr, port: u16) -> bool {
    let server = start_tcp_listener(to, address, port);
    let text = format!("to {address} port {port}");
    let sent = send_tcp(from, SocketAddr::new(address, port), &text);
    sent && server.wait_with_output().stdout == text.as_bytes()
}

fn check(lab: &Lab, id: &str) {
    let answer = api_request(lab, "GET", &format!("/v1/containers/{id}/check"), "");
    assert_eq!(answer.status, 200, "CHECK {id}: {}", answer.body);
}

#[test]
fn veth_and_netkit_containers_side_by_side() {
    if let Err(why) = probe_netkit() {
        eprintln!(
            "this kernel has no netkit ({why}): see netkit_is_refused_where_the_kernel_lacks_it"
        );
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &["--container-device=veth"]);
    let old = lab.container_id("old");
    let created = create(&lab, &old, "31000-31099");
    assert_eq!(created["device"], "veth");
    assert_eq!(link_kind(&lab.host, "netiso0"), "veth");
    assert!(agent.stop());

    // The next agent gives new containers netkit; the old one keeps its veth.
    let agent = Agent::start(&lab, &["--container-device=auto"]);
    let host = api_request(&lab, "GET", "/v1/host", "").json();
    assert_eq!(host["container_device"], "netkit");
    let new = lab.container_id("new");
    let created = create(&lab, &new, "31100-31199");
    assert_eq!(created["device"], "netkit");
    assert_eq!(link_kind(&lab.host, "netiso1"), "netkit");
    let (ok, listed, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    let device_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["device"].clone())
    };
    assert_eq!(device_of(&old), Some("veth".into()));
    assert_eq!(device_of(&new), Some("netkit".into()));
    let old_ns = Netns::existing(&format!("netiso-{old}"));
    let new_ns = Netns::existing(&format!("netiso-{new}"));
    assert_eq!(link_kind(&new_ns, "eth0"), "netkit");
    assert_eq!(link_kind(&old_ns, "eth0"), "veth");

    for address in [IpAddr::V4(HOST_IPV4), IpAddr::V6(HOST_IPV6)] {
        // The network reaches both, each on its own ports only.
        assert!(tcp_reaches(&lab.remote, &old_ns, address, 31010));
        assert!(tcp_reaches(&lab.remote, &new_ns, address, 31110));
        // Each reaches the other through the host's address, both ways.
        assert!(tcp_reaches(&old_ns, &new_ns, address, 31120));
        assert!(tcp_reaches(&new_ns, &old_ns, address, 31020));
    }
    // A port neither owns is refused to both, from either side.
    for (from, to) in [(&old_ns, &new_ns), (&new_ns, &old_ns)] {
        let _server = start_tcp_listener(to, IpAddr::V4(HOST_IPV4), 31500);
        assert!(!send_tcp(
            from,
            SocketAddr::new(IpAddr::V4(HOST_IPV4), 31500),
            "not yours"
        ));
    }
    // Echo conversations of a netkit container are its own, not the host's.
    for remote in [IpAddr::V4(REMOTE_IPV4), IpAddr::V6(REMOTE_IPV6)] {
        assert!(ping(&new_ns, remote), "netkit container pings {remote}");
        assert!(ping(&old_ns, remote), "veth container pings {remote}");
        assert!(ping(&lab.host, remote), "host pings {remote}");
    }
    check(&lab, &old);
    check(&lab, &new);

    // Statistics: the netkit container's link counters saw its traffic both ways.
    let statistics = api_request(&lab, "GET", &format!("/v1/statistics/{new}"), "").json();
    let stats = &statistics[0]["statistics"];
    for counter in ["net_rx_packets", "net_tx_packets"] {
        assert!(
            stats[counter].as_u64().unwrap_or(0) >= 10,
            "{counter}: {statistics}"
        );
    }

    // A restart keeps both kinds as they are; so does the datapath's check.
    assert!(agent.stop());
    let _agent = Agent::start(&lab, &[]);
    assert_eq!(link_kind(&lab.host, "netiso0"), "veth");
    assert_eq!(link_kind(&lab.host, "netiso1"), "netkit");
    check(&lab, &old);
    check(&lab, &new);
    assert!(tcp_reaches(
        &new_ns,
        &lab.remote,
        IpAddr::V4(REMOTE_IPV4),
        5201
    ));
    drop((old_ns, new_ns));
    for id in [&old, &new] {
        let (ok, _, stderr) = cli(&lab, &["container", "destroy", id]);
        assert!(ok, "{stderr}");
    }
    wait_until("both pairs' removal", Duration::from_secs(10), || {
        let links = lab.host.exec(&["ip", "-o", "link", "show"]);
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        !links.contains("netiso0") && !links.contains("netiso1")
    });
}

#[test]
fn netkit_is_refused_where_the_kernel_lacks_it() {
    let lab = Lab::new();
    let (ok, stdout, _) = run_netiso(&lab.host, &["doctor"]);
    let netkit_line = stdout
        .lines()
        .find(|l| l.contains("netkit"))
        .unwrap_or_default()
        .to_owned();
    if probe_netkit().is_ok() {
        assert!(ok && netkit_line.trim_start().starts_with("ok"), "{stdout}");
        let _agent = Agent::start(&lab, &["--container-device=netkit"]);
        let host = api_request(&lab, "GET", "/v1/host", "").json();
        assert_eq!(host["container_device"], "netkit");
        return;
    }
    assert!(netkit_line.trim_start().starts_with("missing"), "{stdout}");
    let args = Agent::lab_args(&lab, &["--container-device=netkit"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = run_netiso(&lab.host, &args);
    assert!(!ok, "the agent started without netkit");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("--container-device=netkit") && last.contains("--container-device=auto"),
        "{stderr}"
    );
    // Nothing was attached or pinned.
    assert!(
        !lab.pin_root().join("links").exists(),
        "the refused agent left links"
    );
    let _agent = Agent::start(&lab, &["--container-device=auto"]);
    let host = api_request(&lab, "GET", "/v1/host", "").json();
    assert_eq!(host["container_device"], "veth");
}
