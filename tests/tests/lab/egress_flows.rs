//! Unique egress flows from a real agent: each container's packets queued in its own
//! flow of the public interface's fq_codel, flows freed and kept across restarts, a
//! foreign root qdisc refused.
use std::{net::SocketAddr, time::Duration};

use netiso_tests::{
    agent::{AGENT_HTTP, Agent, LAB_RESOURCES, cli, run_netiso},
    lab::{Lab, REMOTE_IPV4, mac_of, send_udp},
    netns::Netns,
    wait::wait_until,
};
use serde_json::Value;

use super::rate_limits::*;

// ---- unique egress flows ----

fn create_with_ports(lab: &Lab, name: &str, ports: &str) -> (Netns, Value) {
    let id = lab.container_id(name);
    let (ok, info, stderr) = cli(lab, &["container", "create", &id, "--ports", ports]);
    assert!(ok, "creating {id}: {stderr}");
    (Netns::existing(&format!("netiso-{id}")), info)
}

/// Each container's `egress_flow`, by name, as `container list` shows them.
fn egress_flows(lab: &Lab) -> Vec<(String, Option<u64>)> {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    let prefix = lab.container_id("");
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
            Some(&"class") => class = words.get(2).map(std::string::ToString::to_string),
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
        let agent = Agent::start(&lab, &["--egress_unique_flow_per_container"]);
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
    let agent = Agent::start(&lab, &flags);
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
    // None of these went to a hashed flow. (The host may have queued a packet or two
    // there before the agent's program was on the interface: not counted.)
    let elsewhere: Vec<_> = queued
        .keys()
        .filter(|c| c.starts_with("2:") && !["2:1", "2:2", "2:3", "2:4"].contains(&c.as_str()))
        .filter(|c| queued[*c] > before.get(*c).copied().unwrap_or(0))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "packets in hashed flows: {queued:?}, before: {before:?}"
    );
    // A destroyed container's flow is free again; flows survive an agent restart.
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &lab.container_id("web")]);
    assert!(ok, "{stderr}");
    let (_cache, info) = create_with_ports(&lab, "cache", "31020-31029");
    assert_eq!(info["egress_flow"], 3, "{info}");
    assert!(agent.stop());
    let _agent = Agent::start(&lab, &flags);
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
        AGENT_HTTP,
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
