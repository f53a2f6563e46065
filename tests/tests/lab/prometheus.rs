//! A real Prometheus (Debian's package) scrapes a lab agent every second: the target is
//! up, what Prometheus stores is what the JSON endpoint says, `promtool` finds no
//! problem in `/metrics`, the shipped alert rules pass their unit tests and fire on a
//! real drop, and every expression of the shipped Grafana dashboard evaluates against
//! what was scraped.
use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use netiso_tests::{
    agent::{AGENT_HTTP, Agent, agent_http, http_get},
    lab::{HOST_IPV4, Lab, REMOTE_IPV4, send_udp},
    netns::{ChildGuard, Netns, output_with_stdin},
    wait::wait_until,
};
use serde_json::Value;

use super::statistics::{create, number, statistics_of, udp_sink, wait_until_quiet};

/// Where the test's Prometheus listens, inside the lab's host namespace.
const PROMETHEUS_HTTP: &str = "127.0.0.1:9090";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A Prometheus in `ns` with its own configuration and storage, stopped and removed
/// on drop.
struct Prometheus<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    _process: ChildGuard,
}

impl<'a> Prometheus<'a> {
    fn start(ns: &'a Netns, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-prometheus"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let rules = deploy_dir().join("prometheus/netiso-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: netiso\n    static_configs:\n      - targets: ['{AGENT_HTTP}']\n",
            rules.display()
        );
        fs::write(dir.join("prometheus.yml"), config).unwrap();
        let process = ns.spawn(&[
            "prometheus",
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={PROMETHEUS_HTTP}"),
            "--log.level=warn",
        ]);
        let prometheus = Self {
            ns,
            dir,
            _process: process,
        };
        let address: SocketAddr = PROMETHEUS_HTTP.parse().unwrap();
        wait_until("Prometheus to be ready", Duration::from_secs(60), || {
            ns.run(|| std::net::TcpStream::connect(address).is_ok())
                && prometheus.get("/-/ready").0 == 200
        });
        prometheus
    }

    fn get(&self, path: &str) -> (u16, String) {
        let answer = http_get(self.ns, PROMETHEUS_HTTP.parse().unwrap(), path);
        (answer.status, answer.body)
    }

    /// Evaluates `expr` now: the answer's `data`, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Value, String> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", url_encode(expr)));
        let answer: Value = serde_json::from_str(&body)
            .map_err(|e| format!("status {status}, not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {}", answer["error"]));
        }
        Ok(answer["data"].clone())
    }

    /// The values of the samples `expr` gives now.
    fn values(&self, expr: &str) -> Vec<f64> {
        let data = self.query(expr).unwrap_or_else(|e| panic!("{e}"));
        data["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|sample| sample["value"][1].as_str().unwrap().parse().unwrap())
            .collect()
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let output = output_with_stdin(
        Command::new("promtool")
            .args(args)
            .current_dir(deploy_dir().join("prometheus")),
        stdin.unwrap_or_default().as_bytes(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if netiso_tests::skipped_in_vm("promtool does not depend on the kernel") {
        return;
    }
    let (ok, text) = promtool(&["check", "rules", "netiso-alerts.yml"], None);
    assert!(ok, "{text}");
    let (ok, text) = promtool(&["test", "rules", "netiso-alerts.test.yml"], None);
    assert!(ok, "{text}");
}

#[test]
fn a_real_prometheus_scrapes_the_agent_and_the_dashboard_and_alerts_evaluate() {
    if netiso_tests::skipped_in_vm("Prometheus does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(
        &lab,
        &[
            "--egress_rate_limit_per_container=10MB",
            "--ingress_rate_limit_per_container=10MB",
            "--network-enable-socket-statistics-summary",
            "--network-enable-socket-statistics-details",
        ],
    );
    let web = create(&lab, "web", "31000-31009", &["app=web"]);
    let web_id = lab.container_id("web");

    // `promtool check metrics` on the exposition as served.
    // A client that names no format gets the classic text format.
    let metrics = http_get(&lab.host, agent_http(), "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        metrics.content_type
    );
    let (ok, text) = promtool(&["check", "metrics"], Some(&metrics.body));
    assert!(
        ok && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );

    // A TCP connection inside the container, for the RTT panel.
    let _connection = web.run(|| {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind(("127.0.0.1", 31001)).unwrap();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", 31001)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buffer = [0; 4];
        server.read_exact(&mut buffer).unwrap();
        (listener, client, server)
    });
    // Known traffic in.
    let _sink = udp_sink(&web, IpAddr::V4(HOST_IPV4), 31000);
    send_udp(&lab.remote, (HOST_IPV4, 31000).into(), 20, 100);
    wait_until_quiet(&lab, "web");

    let prometheus = Prometheus::start(&lab.host, &web_id);
    wait_until(
        "the agent's target to be up",
        Duration::from_secs(60),
        || prometheus.values(r#"up{job="netiso"}"#) == [1.0],
    );
    // What Prometheus stored equals what the JSON endpoint says now (nothing moves:
    // the container is quiet).
    let rx_bytes = number(&statistics_of(&lab, "web"), "/net_rx_bytes") as f64;
    assert!(rx_bytes >= 20.0 * 100.0, "{rx_bytes}");
    let stored =
        format!(r#"netiso_container_network_receive_bytes_total{{container_id="{web_id}"}}"#);
    wait_until(
        "Prometheus to store the receive bytes",
        Duration::from_secs(30),
        || prometheus.values(&stored) == [rx_bytes],
    );

    // Packets from a port the container does not own, once Prometheus has seen the
    // counter at 0 (an increase needs two samples).
    web.run(|| {
        let socket = UdpSocket::bind((HOST_IPV4, 29999)).expect("binding an unowned port");
        for _ in 0..5 {
            socket
                .send_to(b"not mine", SocketAddr::new(IpAddr::V4(REMOTE_IPV4), 7002))
                .expect("sending");
        }
    });
    let dropped = number(
        &statistics_of(&lab, "web"),
        "/netiso_datapath_statistics/tx_dropped_port_not_owned",
    );
    assert_eq!(dropped, 5);

    // The unowned-port alert's expression sees the drops (the alert itself waits a
    // minute before firing; promtool's unit tests cover that).
    let rules = fs::read_to_string(deploy_dir().join("prometheus/netiso-alerts.yml")).unwrap();
    let drops_expr = rules
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("expr: ")
                .filter(|e| e.contains("port_not_owned"))
        })
        .expect("the unowned-port rule");
    wait_until(
        "the unowned-port alert to go pending",
        Duration::from_secs(30),
        || {
            let (_, body) = prometheus.get("/api/v1/alerts");
            let alerts: Value = serde_json::from_str(&body).unwrap();
            alerts["data"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "NetisoUnownedPortDrops"
                        && a["labels"]["container_id"] == web_id.as_str()
                })
        },
    );
    assert!(!prometheus.values(drops_expr).is_empty(), "{drops_expr}");

    // Every dashboard expression evaluates, and names only metrics the agent serves
    // (a misspelt name evaluates fine, to nothing).
    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(deploy_dir().join("grafana/netiso.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let served = http_get(&lab.host, agent_http(), "/metrics").body;
    let mut expressions = Vec::new();
    collect_expressions(&dashboard, &mut expressions);
    assert!(expressions.len() >= 10, "{expressions:?}");
    for expr in &expressions {
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$container", ".*");
        if let Err(e) = prometheus.query(&concrete) {
            panic!("the dashboard's {expr} fails: {e}");
        }
        // Served only once a container could not be probed.
        let only_on_failure = ["netiso_container_statistics_probe_failures_total"];
        for name in metric_names(expr)
            .into_iter()
            .filter(|n| !only_on_failure.contains(&n.as_str()))
        {
            assert!(
                served
                    .lines()
                    .any(|l| l.split([' ', '{']).any(|word| word == name)),
                "the dashboard's {expr} uses {name}, which the agent does not serve"
            );
        }
    }
    // The throughput panel shows the container's traffic.
    let throughput = expressions
        .iter()
        .find(|e| e.contains("receive_bytes_total") && e.contains("* 8"))
        .expect("a receive throughput panel");
    let concrete = throughput
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$container", &web_id);
    wait_until(
        "the throughput panel to have the container",
        Duration::from_secs(30),
        || !prometheus.values(&concrete).is_empty(),
    );
}

/// Every `expr` in a Grafana dashboard: its panels' queries and its variables' ones.
fn collect_expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    ("definition", Value::String(d)) if d.starts_with("label_values(") => {
                        // label_values(SELECTOR, label): the selector is PromQL.
                        let inner = &d["label_values(".len()..d.rfind(',').unwrap()];
                        out.push(inner.to_owned());
                    }
                    _ => collect_expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_expressions(v, out)),
        _ => {}
    }
}

/// The `netiso_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("netiso_"))
        .map(str::to_owned)
        .collect()
}
