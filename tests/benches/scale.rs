//! netiso with up to 1000 containers, through the control API of a release agent (no
//! CLI process per operation): the time of every create on the way to 1000, the
//! agent's memory and descriptors and the host's memory at 0, 100 and 1000
//! containers, the time of a `/monitor/statistics` and a `/metrics` scrape, create
//! and destroy latency with 1000 containers present, then the scrapes again with the
//! socket and SNMP statistics on (after a restart that keeps the containers). Run
//! with `cargo xtask bench scale`; NETISO_SCALE_CONTAINERS=N for another count.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, api_request, http_get},
    lab::Lab,
    soak::{SoakReport, rss_kib},
};

const LISTEN: &str = "127.0.0.1:5051";
/// 1024 ephemeral ranges of 16 ports, clear of the lab host's own range (32768-60999)
/// and of the containers' ports.
const RESOURCES: &str = "--resources=ports:[31000-32000];ephemeral_ports:[12288-28671]";
const SCRAPES: usize = 20;
/// Create/destroy cycles of one more container with all the others present.
const CYCLES: usize = 200;

/// The agent's and the host's footprint at one moment.
struct Footprint {
    containers: usize,
    rss_kib: u64,
    descriptors: usize,
    host_available_kib: u64,
}

impl Footprint {
    fn of(agent: &Agent, containers: usize) -> Self {
        Self {
            containers,
            rss_kib: rss_kib(agent.pid()),
            descriptors: agent.open_files(),
            host_available_kib: mem_available_kib(),
        }
    }
}

fn main() {
    let total: usize = std::env::var("NETISO_SCALE_CONTAINERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let steps: Vec<usize> = [100, total].into_iter().filter(|&n| n <= total).collect();
    let lab = Lab::new();
    let agent = Agent::start(&lab, &["--listen", LISTEN, RESOURCES]);
    let mut footprints = vec![Footprint::of(&agent, 0)];
    let mut create_ms = Vec::with_capacity(total);
    let mut scrapes = Vec::new();
    let started = Instant::now();
    for &step in &steps {
        for index in footprints.last().map_or(0, |f| f.containers)..step {
            create_ms.push(time_ms(|| create(&lab, &name(&lab, index))));
        }
        // After a scrape: the statistics keep a socket in each container.
        scrapes.push((step.to_string(), scrape(&lab, step)));
        footprints.push(Footprint::of(&agent, step));
        eprintln!(
            "  {step} containers, {:.1} s of creates so far",
            create_ms.iter().sum::<f64>() / 1e3
        );
    }
    let creating_all = started.elapsed();
    let (mut cycle_create, mut cycle_destroy) = (Vec::new(), Vec::new());
    let extra = name(&lab, total);
    for _ in 0..CYCLES {
        cycle_create.push(time_ms(|| create(&lab, &extra)));
        cycle_destroy.push(time_ms(|| destroy(&lab, &extra)));
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
    scrapes.push((
        format!("{total}, socket and SNMP statistics on"),
        scrape(&lab, total),
    ));
    let with_details_rss = rss_kib(agent.pid());
    eprintln!("  removing the containers…");
    let mut destroy_ms: Vec<f64> = (0..total)
        .map(|index| time_ms(|| destroy(&lab, &name(&lab, index))))
        .collect();
    agent.kill();

    println!(
        "control plane, through the API ({total} creates in {:.1} s, one at a time):",
        creating_all.as_secs_f64()
    );
    println!("  operation                        p50        p99");
    for (what, values) in [
        (format!("create, 0 → {total}"), &mut create_ms),
        (format!("create, {total} present"), &mut cycle_create),
        (format!("destroy, {total} present"), &mut cycle_destroy),
        (format!("destroy, {total} → 0"), &mut destroy_ms),
    ] {
        values.sort_by(f64::total_cmp);
        println!(
            "  {what:<28} {:>7.1} ms {:>7.1} ms",
            SoakReport::quantile(values, 0.5),
            SoakReport::quantile(values, 0.99)
        );
    }
    println!("memory and descriptors:");
    println!("  containers  agent RSS  descriptors  host memory in use (since 0)");
    let base = &footprints[0];
    for f in &footprints {
        println!(
            "  {:>10}  {:>6.1} MiB  {:>11}  {:>8.1} MiB",
            f.containers,
            f.rss_kib as f64 / 1024.0,
            f.descriptors,
            base.host_available_kib.saturating_sub(f.host_available_kib) as f64 / 1024.0
        );
    }
    let last = footprints.last().expect("a footprint");
    if last.containers > 0 {
        let per = |a: u64, b: u64| (b as f64 - a as f64) / last.containers as f64;
        println!(
            "  each container: {:.1} KiB of agent memory, {:.2} descriptors, {:.1} KiB of kernel memory (namespace, veth pair, qdiscs, filters)",
            per(base.rss_kib, last.rss_kib),
            per(base.descriptors as u64, last.descriptors as u64),
            per(last.host_available_kib, base.host_available_kib)
        );
    }
    println!(
        "  agent RSS with socket and SNMP statistics on, after scrapes: {:.1} MiB",
        with_details_rss as f64 / 1024.0
    );
    println!(
        "scrapes (median and worst of {SCRAPES}; the worst is often the first after new containers):"
    );
    println!("  containers                              /monitor/statistics        /metrics");
    for (containers, (json, metrics)) in &scrapes {
        println!(
            "  {containers:<38} {:>7.1} ms {:>7.1} ms  {:>7.1} ms",
            json.0, json.1, metrics.0
        );
    }
}

fn name(lab: &Lab, index: usize) -> String {
    format!("lab-{}-c{index}", lab.id)
}

fn create(lab: &Lab, id: &str) {
    let answer = api_request(lab, "POST", "/v1/containers", format!(r#"{{"id":"{id}"}}"#));
    assert_eq!(answer.status, 201, "creating {id}: {}", answer.body);
}

fn destroy(lab: &Lab, id: &str) {
    let answer = api_request(lab, "DELETE", &format!("/v1/containers/{id}"), "");
    assert_eq!(answer.status, 200, "destroying {id}: {}", answer.body);
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

/// (median, worst) of `/monitor/statistics` and (median, worst) of `/metrics`, in ms.
fn scrape(lab: &Lab, containers: usize) -> ((f64, f64), (f64, f64)) {
    let listen: SocketAddr = LISTEN.parse().expect("an address");
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
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        (ms(times[SCRAPES / 2]), ms(times[SCRAPES - 1]))
    };
    (time("/monitor/statistics"), time("/metrics"))
}

/// The host's available memory (`MemAvailable`), in KiB.
fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
