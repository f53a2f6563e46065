//! Cost of a statistics scrape against the number of containers: a real agent in a lab
//! namespace, up to 1000 real containers (namespace, veth pair, datapath entries), and
//! timed `GET /monitor/statistics` and `GET /metrics`, first with the default
//! statistics, then (after restarting the agent, which keeps the containers) with the
//! socket and SNMP statistics on, which enter every container's namespace for more.
//! Also reports the agent's memory. Run with `cargo xtask bench stats`.
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, cli, http_get},
    lab::Lab,
};

const LISTEN: &str = "127.0.0.1:5051";
/// 1024 ephemeral ranges of 16 ports, clear of the lab host's own range (32768-60999)
/// and of the containers' ports.
const RESOURCES: &str = "--resources=ports:[31000-32000];ephemeral_ports:[12288-28671]";
const STEPS: [usize; 4] = [10, 100, 500, 1000];
const SCRAPES: usize = 20;
const CREATORS: usize = 4;

fn main() {
    // `cargo bench` passes --bench; a filter would be a test name, which this has not.
    let lab = Lab::new();
    let agent = Agent::start(&lab, &["--listen", LISTEN, RESOURCES]);
    println!("containers  scrape /monitor/statistics (median, max)  /metrics (median)  agent RSS");
    let mut created = 0;
    for step in STEPS {
        create_containers(&lab, created, step);
        created = step;
        report(&lab, &agent, step);
    }
    agent.kill();
    let agent = Agent::start(
        &lab,
        &[
            "--listen",
            LISTEN,
            RESOURCES,
            "--network_enable_socket_statistics_summary",
            "--network_enable_socket_statistics_details",
            "--network_enable_snmp_statistics",
        ],
    );
    println!("with socket and SNMP statistics (after a restart that kept the containers):");
    report(&lab, &agent, created);
    println!("removing the containers…");
    destroy_containers(&lab, created);
    agent.kill();
}

fn name(lab: &Lab, index: usize) -> String {
    format!("lab-{}-c{index}", lab.id)
}

/// Runs `f(index)` for every index in `from..to`, a few at a time.
fn in_parallel(from: usize, to: usize, f: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(from);
    thread::scope(|scope| {
        for _ in 0..CREATORS {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= to {
                        return;
                    }
                    f(index);
                }
            });
        }
    });
}

/// Creates containers `from..to` through the CLI.
fn create_containers(lab: &Lab, from: usize, to: usize) {
    let started = Instant::now();
    in_parallel(from, to, |index| {
        let (ok, _, stderr) = cli(lab, &["container", "create", &name(lab, index)]);
        assert!(ok, "creating container {index}: {stderr}");
    });
    eprintln!(
        "  created containers {from}..{to} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn destroy_containers(lab: &Lab, count: usize) {
    in_parallel(0, count, |index| {
        cli(lab, &["container", "destroy", &name(lab, index)]);
    });
}

fn report(lab: &Lab, agent: &Agent, containers: usize) {
    let listen: SocketAddr = LISTEN.parse().unwrap();
    let time = |path: &str| {
        let mut times: Vec<Duration> = (0..SCRAPES)
            .map(|_| {
                let started = Instant::now();
                let answer = http_get(&lab.host, listen, path);
                let took = started.elapsed();
                assert_eq!(answer.status, 200, "{}", answer.body);
                if path.starts_with("/monitor") {
                    let entries = answer.json().as_array().map_or(0, Vec::len);
                    assert_eq!(entries, containers, "every container has an entry");
                }
                took
            })
            .collect();
        times.sort();
        (times[SCRAPES / 2], times[SCRAPES - 1])
    };
    let (json_median, json_max) = time("/monitor/statistics");
    let (metrics_median, _) = time("/metrics");
    println!(
        "{containers:>10}  {:>24.1} ms {:>8.1} ms  {:>15.1} ms  {:>6.1} MiB",
        ms(json_median),
        ms(json_max),
        ms(metrics_median),
        rss_mib(agent.pid())
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
