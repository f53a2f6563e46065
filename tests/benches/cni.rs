//! ADD and DEL latency of the CNI plugin, the plugin process included (as a runtime
//! sees it), against a release agent: p50 and p99 over `NETISO_CNI_BENCH_RUNS`
//! attachments (200), each in a namespace of its own with a published port that is
//! translated. Run with `cargo xtask bench cni`.
use std::time::Instant;

use netiso_tests::{agent::Agent, cni::run_plugin, lab::Lab, soak::SoakReport};
use serde_json::json;

fn main() {
    let runs: usize = std::env::var("NETISO_CNI_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "netiso",
        "type": "netiso",
        "socket": lab.api_socket(),
        "runtimeConfig": { "portMappings": [
            { "hostPort": 31080, "containerPort": 80, "protocol": "tcp" },
        ]},
    });
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let netns = lab.runtime_netns(&format!("bench{i}"));
        let path = netns.path().display().to_string();
        let id = lab.cni_container_id(&format!("b{i}"));
        let env = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        let started = Instant::now();
        let added = run_plugin(&lab.host, "ADD", &env, &config);
        adds.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(added.ok, "ADD: {} {}", added.out, added.err);
        let started = Instant::now();
        let deleted = run_plugin(&lab.host, "DEL", &env, &config);
        dels.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(deleted.ok, "DEL: {}", deleted.err);
    }
    for (name, mut times) in [("ADD", adds), ("DEL", dels)] {
        times.sort_unstable_by(f64::total_cmp);
        println!(
            "cni {name}: p50 {:.1} ms, p99 {:.1} ms over {runs} (plugin process included)",
            SoakReport::quantile(&times, 0.5),
            SoakReport::quantile(&times, 0.99),
        );
    }
    agent.kill();
}
