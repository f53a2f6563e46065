//! Upgrading in place from the previous release under traffic, with 1, 100 and 1000
//! containers (NETISO_UPGRADE_CONTAINERS=1,100 for others): the previous release's
//! agent (NETISO_PREVIOUS_BIN, which `cargo xtask bench upgrade` builds) makes the
//! containers, a TCP stream runs into the first and 10 000 UDP datagrams/s into the
//! second, the old agent stops, and the release agent of this tree starts. Reported:
//! TCP bytes lost, UDP datagrams lost, the upgrade's own time, the time from the new
//! agent's start to its first answered create, and its memory after the upgrade.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{Agent, api_request},
    lab::{HOST_IPV4, Lab},
    netns::Netns,
    soak::rss_kib,
    streams::{CheckedTcpStream, CountedUdpStream},
    wait::wait_until,
};

/// 4095 ephemeral ranges of 16 ports, clear of the lab host's own range and of the
/// streams' ports.
const RESOURCES: &str = "--resources=ports:[31000-31999];ephemeral_ports:[1024-30000]";
const UDP_PER_SECOND: u64 = 10_000;
const TCP_BYTES_PER_SECOND: u64 = 4 << 20;

struct Run {
    containers: usize,
    tcp_sent: u64,
    tcp_lost: i64,
    udp_sent: u64,
    udp_lost: u64,
    upgrade_ms: String,
    first_create: Duration,
    rss_mib: f64,
}

fn main() {
    let previous = PathBuf::from(
        std::env::var_os("NETISO_PREVIOUS_BIN")
            .expect("NETISO_PREVIOUS_BIN is not set: run `cargo xtask bench upgrade`"),
    );
    let counts: Vec<usize> = std::env::var("NETISO_UPGRADE_CONTAINERS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("a number of containers"))
        .collect();
    let runs: Vec<Run> = counts
        .iter()
        .map(|&containers| upgrade(&previous, containers.max(1)))
        .collect();
    println!(
        "upgrade in place from netiso 0.1.0 under traffic (TCP {} MiB/s into one container, {UDP_PER_SECOND} UDP datagrams/s into another):",
        TCP_BYTES_PER_SECOND >> 20
    );
    println!(
        "  containers  TCP bytes lost (of sent)   UDP lost (of sent)     upgrade   first create   agent RSS"
    );
    for run in &runs {
        println!(
            "  {:>10}  {:>6} ({:>12})   {:>5} ({:>9})  {:>7} ms  {:>10.0} ms  {:>6.1} MiB",
            run.containers,
            run.tcp_lost,
            run.tcp_sent,
            run.udp_lost,
            run.udp_sent,
            run.upgrade_ms,
            run.first_create.as_secs_f64() * 1e3,
            run.rss_mib
        );
    }
}

fn container_id(lab: &Lab, index: usize) -> String {
    format!("lab-{}-c{index}", lab.id)
}

fn create(lab: &Lab, id: &str, ports: Option<(u16, u16)>) {
    let body = match ports {
        Some((begin, end)) => {
            format!(r#"{{"id":"{id}","ports":[{{"begin":{begin},"end":{end}}}]}}"#)
        }
        None => format!(r#"{{"id":"{id}"}}"#),
    };
    let answer = api_request(lab, "POST", "/v1/containers", body);
    assert_eq!(answer.status, 201, "creating {id}: {}", answer.body);
}

fn upgrade(previous: &std::path::Path, containers: usize) -> Run {
    eprintln!("  {containers} containers: creating them with netiso 0.1.0…");
    let lab = Lab::new();
    let old = Agent::start_binary(&lab, previous, &[RESOURCES]);
    for index in 0..containers {
        let ports = match index {
            0 => Some((31000, 31009)),
            1 => Some((31010, 31019)),
            _ => None,
        };
        create(&lab, &container_id(&lab, index), ports);
    }
    let namespace = |index| Netns::existing(&format!("netiso-{}", container_id(&lab, index)));
    let tcp = CheckedTcpStream::start(
        &lab.remote,
        &namespace(0),
        SocketAddr::new(IpAddr::V4(HOST_IPV4), 31005),
        TCP_BYTES_PER_SECOND,
    );
    // With one container, both streams go to it.
    let (udp_container, udp_port) = if containers > 1 {
        (1, 31015)
    } else {
        (0, 31006)
    };
    let udp = CountedUdpStream::start(
        &lab.remote,
        &namespace(udp_container),
        SocketAddr::new(IpAddr::V4(HOST_IPV4), udp_port),
        UDP_PER_SECOND,
    );
    wait_until("the streams to flow", Duration::from_secs(20), || {
        tcp.received() > 0 && udp.received() > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("  {containers} containers: upgrading under traffic…");
    assert!(old.stop(), "the previous release stopped");
    let started = Instant::now();
    let agent = Agent::start(&lab, &[RESOURCES]);
    create(&lab, &container_id(&lab, containers), None);
    let first_create = started.elapsed();
    let (_, log) = agent.wait_for_log("pinned state upgraded in place");
    // "… from layout 1 to 3 in N ms: …"
    let upgrade_ms = log
        .lines()
        .last()
        .and_then(|line| line.split(" ms:").next())
        .and_then(|head| head.rsplit(' ').next())
        .unwrap_or("?")
        .to_owned();
    let rss_mib = rss_kib(agent.pid()) as f64 / 1024.0;
    let (tcp_mark, udp_mark) = (tcp.received(), udp.received());
    wait_until(
        "the streams to flow after the upgrade",
        Duration::from_secs(30),
        || tcp.received() > tcp_mark + 65536 && udp.received() > udp_mark + 1000,
    );
    let tcp = tcp.finish();
    let udp = udp.finish();
    let tcp_sent = tcp.sent.expect("the TCP stream survived");
    let tcp_received = tcp.received.expect("the TCP stream was read to its end");
    assert_eq!(
        tcp.first_wrong_byte, None,
        "the TCP stream's bytes were intact"
    );
    eprintln!("  {containers} containers: removing them…");
    for index in 0..=containers {
        let id = container_id(&lab, index);
        let answer = api_request(&lab, "DELETE", &format!("/v1/containers/{id}"), "");
        assert_eq!(answer.status, 200, "destroying {id}: {}", answer.body);
    }
    drop(agent);
    Run {
        containers,
        tcp_sent,
        tcp_lost: tcp_sent as i64 - tcp_received as i64,
        udp_sent: udp.sent,
        udp_lost: udp.lost,
        upgrade_ms,
        first_create,
        rss_mib,
    }
}
