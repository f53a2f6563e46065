//! The soak: many create/destroy cycles through the control API while traffic flows
//! to a container that stays, then a count of everything the agent holds. The lab
//! tests run a short one; `cargo xtask bench soak` the long one.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent::{Agent, api_request},
    lab::{HOST_IPV4, Lab},
    leaks::assert_holds_only_live_containers,
    netns::Netns,
};

/// What a soak measured.
#[derive(Debug)]
pub struct SoakReport {
    pub cycles: usize,
    /// Milliseconds per create and per destroy, sorted.
    pub create_ms: Vec<f64>,
    pub destroy_ms: Vec<f64>,
    /// The agent's resident memory (KiB) and descriptors before and after.
    pub rss_kib: (u64, u64),
    pub open_files: (usize, usize),
    /// Datagrams the remote sent to the steady container, and how many it got.
    pub sent: u64,
    pub received: u64,
}

impl SoakReport {
    /// The `q` quantile (0 to 1) of sorted `values`.
    pub fn quantile(values: &[f64], q: f64) -> f64 {
        if values.is_empty() {
            return 0.0;
        }
        let index = ((values.len() - 1) as f64 * q).round() as usize;
        values[index.min(values.len() - 1)]
    }

    pub fn print(&self) {
        let q = Self::quantile;
        println!(
            "{} cycles: create p50 {:.1} ms p99 {:.1} ms; destroy p50 {:.1} ms p99 {:.1} ms",
            self.cycles,
            q(&self.create_ms, 0.5),
            q(&self.create_ms, 0.99),
            q(&self.destroy_ms, 0.5),
            q(&self.destroy_ms, 0.99),
        );
        println!(
            "agent RSS {} KiB → {} KiB; descriptors {} → {}; traffic to the steady container: {} of {} datagrams",
            self.rss_kib.0,
            self.rss_kib.1,
            self.open_files.0,
            self.open_files.1,
            self.received,
            self.sent
        );
    }
}

/// The agent's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `cycles` create/destroy cycles of one container (ports 31000-31009) through
/// `agent`'s control API, while the remote sends UDP to a steady container (port
/// 31900); then asserts that the agent holds only the steady container. Progress is
/// printed every `progress_every` cycles (0: never).
pub fn soak(lab: &Lab, agent: &Agent, cycles: usize, progress_every: usize) -> SoakReport {
    let steady = lab.container_id("steady");
    let created = api_request(
        lab,
        "POST",
        "/v1/containers",
        format!(r#"{{"id":"{steady}","ports":[{{"begin":31900,"end":31909}}]}}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let container = Netns::existing(&format!("netiso-{steady}"));
    let target = SocketAddr::new(IpAddr::V4(HOST_IPV4), 31900);
    let receiver = container.run(|| UdpSocket::bind(target).expect("binding in the container"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sender = lab
        .remote
        .run(|| UdpSocket::bind("0.0.0.0:0").expect("binding"));
    let (sent, received, stop) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let start = (rss_kib(agent.pid()), agent.open_files());
    let mut report = thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if sender.send_to(&[0x5a; 32], target).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        let cycled = cycle(lab, cycles, progress_every);
        // Let the last datagrams arrive before stopping.
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        cycled
    });
    report.rss_kib = (start.0, rss_kib(agent.pid()));
    report.open_files = (start.1, agent.open_files());
    report.sent = sent.into_inner();
    report.received = received.into_inner();
    let list = api_request(lab, "GET", "/v1/containers", "");
    assert_holds_only_live_containers(lab, &list.json(), "after the soak");
    assert_eq!(list.json().as_array().map(Vec::len), Some(1));
    report
}

fn cycle(lab: &Lab, cycles: usize, progress_every: usize) -> SoakReport {
    let id = lab.container_id("cycled");
    let body = format!(r#"{{"id":"{id}","ports":[{{"begin":31000,"end":31009}}]}}"#);
    let mut report = SoakReport {
        cycles,
        create_ms: Vec::with_capacity(cycles),
        destroy_ms: Vec::with_capacity(cycles),
        rss_kib: (0, 0),
        open_files: (0, 0),
        sent: 0,
        received: 0,
    };
    let started = Instant::now();
    for i in 0..cycles {
        let t = Instant::now();
        let created = api_request(lab, "POST", "/v1/containers", &body);
        report.create_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(created.status, 201, "cycle {i}: {}", created.body);
        let t = Instant::now();
        let destroyed = api_request(lab, "DELETE", &format!("/v1/containers/{id}"), "");
        report.destroy_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(destroyed.status, 200, "cycle {i}: {}", destroyed.body);
        if progress_every != 0 && (i + 1) % progress_every == 0 {
            println!(
                "  {} cycles in {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    report.create_ms.sort_by(f64::total_cmp);
    report.destroy_ms.sort_by(f64::total_cmp);
    report
}
