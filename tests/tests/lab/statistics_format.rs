//! The statistics' formats: Mesos's JSON shape key for key, `netiso stats`,
//! `/metrics` through Prometheus's own parser, counters across agent restarts.
use std::{collections::BTreeSet, net::IpAddr, process::Command, time::Duration};

use netiso_tests::{
    agent::{Agent, agent_http, cli, http_get_accepting},
    lab::{HOST_IPV4, Lab, send_udp},
    netns::output_with_stdin,
    wait::wait_until,
};
use serde_json::Value;

use super::statistics::*;

/// The example answer of Mesos's network monitoring documentation, network keys only
/// (its cpus_*, mem_* and perf come from other Mesos isolators).
const MESOS_EXAMPLE: &str = r#"[{
    "executor_id": "job.1436298853",
    "executor_name": "Command Executor (Task: job.1436298853) (Command: sh -c 'iperf ....')",
    "framework_id": "20150707-195256-1740121354-5150-29801-0000",
    "source": "job.1436298853",
    "statistics": {
        "net_rx_bytes": 10847, "net_rx_dropped": 0, "net_rx_errors": 0, "net_rx_packets": 143,
        "net_traffic_control_statistics": [
            {"backlog": 0, "bytes": 163206809152, "drops": 77147, "id": "bw_limit",
             "overlimits": 210693719, "packets": 107941027, "qlen": 10236, "ratebps": 0,
             "ratepps": 0, "requeues": 0}
        ],
        "net_tx_bytes": 163200529816, "net_tx_dropped": 0, "net_tx_errors": 0,
        "net_tx_packets": 107936874,
        "timestamp": 1436300487.41595
    }
}]"#;

/// The JSON type of `value`, with integers and floats told apart as protobuf does.
fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "double",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks that every key of `example` is in `ours` with the same shape, recursively.
fn same_shape(example: &Value, ours: &Value, path: &str) {
    assert_eq!(shape(example), shape(ours), "{path}: {ours}");
    match (example, ours) {
        (Value::Object(e), Value::Object(o)) => {
            for (key, value) in e {
                let inner = format!("{path}.{key}");
                same_shape(
                    value,
                    o.get(key).unwrap_or_else(|| panic!("{inner} missing")),
                    &inner,
                );
            }
        }
        (Value::Array(e), Value::Array(o)) => {
            for (e, o) in e.iter().zip(o) {
                same_shape(e, o, &format!("{path}[]"));
            }
        }
        _ => {}
    }
}

#[test]
fn the_json_has_the_shape_of_the_mesos_example_key_for_key() {
    if netiso_tests::skipped_in_vm("the JSON shape does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let web = create(
        &lab,
        "web",
        "31000-31009",
        &["executor_name=Command Executor", "framework_id=fw-1"],
    );
    assert!(tc(
        &web,
        &[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"
        ]
    ));
    let ours = Value::Array(monitor(&lab));
    let example: Value = serde_json::from_str(MESOS_EXAMPLE).unwrap();
    same_shape(&example, &ours, "");
    let entry = &ours[0];
    let id = lab.container_id("web");
    assert_eq!(entry["executor_id"], id.as_str());
    assert_eq!(entry["source"], id.as_str());
    assert_eq!(entry["executor_name"], "Command Executor");
    assert_eq!(entry["framework_id"], "fw-1");
    // Beyond the example's keys, only the documented ones.
    let example_keys: BTreeSet<&str> = example[0]["statistics"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let extra: BTreeSet<&str> = entry["statistics"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| !example_keys.contains(k))
        .collect();
    assert_eq!(
        extra,
        ["net_ephemeral_ports", "netiso_datapath_statistics"].into()
    );
    let top: BTreeSet<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        [
            "executor_id",
            "executor_name",
            "framework_id",
            "source",
            "statistics"
        ]
        .into()
    );
}

#[test]
fn counters_survive_an_agent_restart_and_never_go_back() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let web = create(&lab, "web", "31000-31009", &[]);
    let _sink = udp_sink(&web, IpAddr::V4(HOST_IPV4), 31000);
    send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 25, 100);
    let mut before = Value::Null;
    wait_until("25 datagrams counted", Duration::from_secs(10), || {
        before = statistics_of(&lab, "web");
        number(&before, "/netiso_datapath_statistics/rx_packets") >= 25
    });
    agent.kill();
    // Traffic while the agent is down is counted too.
    send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 5, 100);
    let _agent = Agent::start(&lab, &[]);
    let after = statistics_of(&lab, "web");
    for pointer in [
        "/net_rx_packets",
        "/net_rx_bytes",
        "/net_tx_packets",
        "/netiso_datapath_statistics/rx_packets",
        "/netiso_datapath_statistics/rx_bytes",
    ] {
        assert!(
            number(&after, pointer) >= number(&before, pointer),
            "{pointer}: {before} then {after}"
        );
    }
    assert_eq!(
        delta(&after, &before, "/netiso_datapath_statistics/rx_packets"),
        5
    );
    assert_eq!(delta(&after, &before, "/net_rx_packets"), 5);
}

#[test]
fn netiso_stats_prints_what_the_endpoint_serves() {
    if netiso_tests::skipped_in_vm("the CLI does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    create(&lab, "web", "31000-31009", &["app=web"]);
    create(&lab, "db", "31010-31019", &[]);
    let without_time = |mut all: Value| {
        for entry in all.as_array_mut().unwrap() {
            entry["statistics"]["timestamp"] = Value::Null;
        }
        all
    };
    // Nothing sends in between: the two answers agree but for their timestamps.
    for name in ["web", "db"] {
        wait_until_quiet(&lab, name);
    }
    let endpoint = without_time(Value::Array(monitor(&lab)));
    let (ok, printed, stderr) = cli(&lab, &["stats"]);
    assert!(ok, "{stderr}");
    assert_eq!(without_time(printed), endpoint);
    assert_eq!(endpoint.as_array().unwrap().len(), 2);
    let web = lab.container_id("web");
    let (ok, one, stderr) = cli(&lab, &["stats", &web]);
    assert!(ok, "{stderr}");
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["executor_id"], web.as_str());
    let (ok, _, stderr) = cli(&lab, &["stats", "no-such-container"]);
    assert!(!ok);
    assert!(
        stderr.contains("no container no-such-container"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Parses `/metrics` with the Prometheus project's own Python parser and returns
/// every sample as (name, labels, value).
fn parse_with_prometheus_client(text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    const SCRIPT: &str = r"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value, family.type])
print(json.dumps(out))
";
    // The VM runner names the Python that `cargo xtask setup` installed into.
    let python = std::env::var("NETISO_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = output_with_stdin(Command::new(python).args(["-c", SCRIPT]), text.as_bytes());
    assert!(
        output.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64, String)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples.into_iter().map(|(n, l, v, _)| (n, l, v)).collect()
}

#[test]
fn metrics_parse_with_the_prometheus_parser_and_every_sample_matches_the_json() {
    if netiso_tests::skipped_in_vm("the /metrics format does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &["--network_enable_socket_statistics_summary"]);
    let web = create(&lab, "web", "31000-31009", &["app=web", "tier.name=front"]);
    create(&lab, "db", "31010-31019", &[]);
    assert!(tc(
        &web,
        &[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"
        ]
    ));
    let _sink = udp_sink(&web, IpAddr::V4(HOST_IPV4), 31000);
    send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 3, 10);
    for name in ["web", "db"] {
        wait_until_quiet(&lab, name);
    }
    // What Prometheus asks for first.
    let answer = http_get_accepting(
        &lab.host,
        agent_http(),
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    let samples = parse_with_prometheus_client(&answer.body);
    let json = monitor(&lab);
    let by_id = |id: &str| {
        json.iter()
            .find(|e| e["executor_id"] == id)
            .unwrap_or_else(|| panic!("{id} not in the JSON"))["statistics"]
            .clone()
    };
    let mut checked = 0;
    for (name, labels, value) in &samples {
        if name == "netiso_containers" {
            assert_eq!(*value, 2.0);
            continue;
        }
        let id = labels["container_id"].as_str().expect("container_id label");
        let stats = by_id(id);
        let qdisc = |field: &str| {
            let wanted = labels["qdisc"].as_str().unwrap();
            let entry = stats["net_traffic_control_statistics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["id"] == wanted)
                .unwrap()
                .clone();
            entry[field].as_f64().unwrap()
        };
        let json_value = |pointer: &str| {
            stats
                .pointer(pointer)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("{pointer} missing for {name}"))
        };
        let expected = match name.as_str() {
            "netiso_container_network_receive_bytes_total" => json_value("/net_rx_bytes"),
            "netiso_container_network_receive_packets_total" => json_value("/net_rx_packets"),
            "netiso_container_network_receive_errors_total" => json_value("/net_rx_errors"),
            "netiso_container_network_receive_packets_dropped_total" => {
                json_value("/net_rx_dropped")
            }
            "netiso_container_network_transmit_bytes_total" => json_value("/net_tx_bytes"),
            "netiso_container_network_transmit_packets_total" => json_value("/net_tx_packets"),
            "netiso_container_network_transmit_errors_total" => json_value("/net_tx_errors"),
            "netiso_container_network_transmit_packets_dropped_total" => {
                json_value("/net_tx_dropped")
            }
            "netiso_container_datapath_receive_bytes_total" => {
                json_value("/netiso_datapath_statistics/rx_bytes")
            }
            "netiso_container_datapath_receive_packets_total" => {
                json_value("/netiso_datapath_statistics/rx_packets")
            }
            "netiso_container_datapath_transmit_bytes_total" => {
                json_value("/netiso_datapath_statistics/tx_bytes")
            }
            "netiso_container_datapath_transmit_packets_total" => {
                json_value("/netiso_datapath_statistics/tx_packets")
            }
            "netiso_container_datapath_transmit_dropped_packets_total" => {
                let reason = labels["reason"].as_str().unwrap();
                json_value(&format!("/netiso_datapath_statistics/tx_dropped_{reason}"))
            }
            "netiso_container_datapath_receive_dropped_packets_total" => {
                let reason = labels["reason"].as_str().unwrap();
                json_value(&format!("/netiso_datapath_statistics/rx_dropped_{reason}"))
            }
            "netiso_container_qdisc_bytes_total" => qdisc("bytes"),
            "netiso_container_qdisc_packets_total" => qdisc("packets"),
            "netiso_container_qdisc_dropped_packets_total" => qdisc("drops"),
            "netiso_container_qdisc_overlimits_total" => qdisc("overlimits"),
            "netiso_container_qdisc_requeues_total" => qdisc("requeues"),
            "netiso_container_qdisc_backlog_bytes" => qdisc("backlog"),
            "netiso_container_qdisc_queue_length" => qdisc("qlen"),
            "netiso_container_ephemeral_port_range_start" => {
                json_value("/net_ephemeral_ports/begin")
            }
            "netiso_container_ephemeral_port_range_end" => json_value("/net_ephemeral_ports/end"),
            "netiso_container_tcp_connections" => {
                let state = labels["state"].as_str().unwrap();
                let key = if state == "active" {
                    "active"
                } else {
                    "time_wait"
                };
                json_value(&format!("/net_tcp_{key}_connections"))
            }
            other => panic!("unexpected sample {other} {labels:?}"),
        };
        assert_eq!(*value, expected, "{name} {labels:?}");
        checked += 1;
    }
    // 2 containers x (8 link + 4 datapath + 9 transmit and 1 receive drop reasons +
    // 2 ports + 2 tcp) + 7 qdisc.
    assert_eq!(checked, 2 * 26 + 7, "{samples:?}");
    let web_labels = &samples
        .iter()
        .find(|(_, l, _)| {
            l.get("container_id").and_then(Value::as_str) == Some(lab.container_id("web").as_str())
        })
        .unwrap()
        .1;
    assert_eq!(web_labels["label_app"], "web");
    assert_eq!(web_labels["label_tier_name"], "front");
}
