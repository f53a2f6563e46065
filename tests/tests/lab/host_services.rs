//! What containers reach on the host, and the bounds of the agent's servers: host
//! services stay reachable as with Mesos, the agent's own HTTP port does not (unless
//! asked), `--container_host_ports` narrows the rest, and neither server can be
//! stalled by idle connections or fed unbounded bodies and labels.
use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use netiso_tests::{
    agent::{AGENT_HTTP, Agent, agent_http, api_request, cli, http_get},
    lab::{HOST_IPV4, Lab},
    netns::Netns,
};

/// Creates a container through the CLI; its namespace.
fn create(lab: &Lab, name: &str) -> Netns {
    let id = lab.container_id(name);
    let (ok, _, stderr) = cli(lab, &["container", "create", &id]);
    assert!(ok, "creating {id}: {stderr}");
    Netns::existing(&format!("netiso-{id}"))
}

/// A host service listening on every address of the host's namespace.
fn host_service(lab: &Lab, port: u16) -> TcpListener {
    lab.host
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .expect("a host service")
}

/// Whether a TCP connection from `ns` to `address:port` is set up within a second.
/// Whether a TCP connection from `ns` succeeds. Three seconds cover one SYN
/// retransmission, which a loaded emulated VM may need; a refused port answers at once
/// and a dropped one takes the whole wait.
fn reaches(ns: &Netns, address: IpAddr, port: u16) -> bool {
    ns.run(|| TcpStream::connect_timeout(&SocketAddr::new(address, port), Duration::from_secs(3)))
        .is_ok()
}

fn dropped_host_port(lab: &Lab, name: &str) -> u64 {
    let all = http_get(&lab.host, agent_http(), "/monitor/statistics").json();
    all.as_array()
        .unwrap()
        .iter()
        .find(|e| e["executor_id"] == lab.container_id(name).as_str())
        .and_then(|e| {
            e["statistics"]["netiso_datapath_statistics"]["tx_dropped_host_port"].as_u64()
        })
        .expect("the container's datapath statistics")
}

#[test]
fn containers_reach_host_services_but_not_the_agent() {
    let lab = Lab::new();
    // On every address, so that the host's address has the agent behind it too.
    let _agent = Agent::start(&lab, &["--listen", "0.0.0.0:5051"]);
    let _service = host_service(&lab, 8080);
    let c1 = create(&lab, "c1");
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let agent_port = agent_http().port();
    for address in [IpAddr::V4(HOST_IPV4), loopback] {
        assert!(reaches(&c1, address, 8080), "host service at {address}");
        assert!(!reaches(&c1, address, agent_port), "the agent at {address}");
    }
    // The host itself still reaches the agent.
    assert_eq!(http_get(&lab.host, agent_http(), "/health").status, 200);
    assert!(dropped_host_port(&lab, "c1") >= 2);
}

#[test]
fn container_host_ports_open_only_what_is_listed() {
    let lab = Lab::new();
    let listed = format!("--container_host_ports=8080,{}", agent_http().port());
    let agent = Agent::start(&lab, &[&listed]);
    let (_open, _closed) = (host_service(&lab, 8080), host_service(&lab, 8081));
    let c1 = create(&lab, "c1");
    let host = IpAddr::V4(HOST_IPV4);
    assert!(reaches(&c1, host, 8080));
    assert!(!reaches(&c1, host, 8081));
    // Listed, the agent's port is reachable.
    assert!(reaches(
        &c1,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        agent_http().port()
    ));
    drop(agent);
    // A restarted agent with `none`: nothing, for the container it takes over too.
    let _agent = Agent::start(&lab, &["--container_host_ports=none"]);
    assert!(!reaches(&c1, host, 8080));
    assert!(dropped_host_port(&lab, "c1") >= 2);
}

/// Sends a raw HTTP request on the control socket; the status of the answer.
fn control_request(lab: &Lab, method: &str, path: &str, body: &[u8]) -> u16 {
    api_request(lab, method, path, body).status
}

#[test]
fn the_servers_bound_bodies_labels_and_idle_connections() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &["--http_timeout=1secs", "--http_max_connections=4"]);
    // Bodies and labels.
    let big = format!(
        r#"{{"id":"x","labels":{{"a":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    assert_eq!(
        control_request(&lab, "POST", "/v1/containers", big.as_bytes()),
        413
    );
    let label = format!("big={}", "x".repeat(2000));
    let id = lab.container_id("labels");
    let (ok, _, stderr) = cli(&lab, &["container", "create", &id, "--label", &label]);
    assert!(!ok);
    assert!(stderr.contains("label 'big' is too large"), "{stderr}");
    assert_eq!(cli(&lab, &["container", "list"]).1, serde_json::json!([]));
    // Ten idle connections against a cap of four: the server closes them after the
    // timeout, and a real request is answered meanwhile.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| {
            lab.host
                .run(|| TcpStream::connect(AGENT_HTTP))
                .expect("connecting")
        })
        .collect();
    let started = Instant::now();
    assert_eq!(http_get(&lab.host, agent_http(), "/health").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    for mut connection in idle {
        connection
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            connection.read(&mut byte).unwrap_or(0),
            0,
            "an idle connection is closed"
        );
    }
}

/// Sends datagrams from `ns` to `to` until `socket` receives one (or 5 s pass): the
/// agent learns new host addresses within a couple of seconds.
fn reaches_by_udp(ns: &Netns, socket: &UdpSocket, to: SocketAddr) -> bool {
    let sender = ns.run(|| UdpSocket::bind(SocketAddr::new(unspecified(to.ip()), 0)).unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        sender.send_to(b"hello", to).unwrap();
        if socket.recv(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[test]
fn the_hosts_other_addresses_reach_its_services() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let c1 = create(&lab, "c1");
    // Addresses the host gains after the agent started.
    lab.host.ip(&["addr", "add", "198.18.0.50/32", "dev", "lo"]);
    lab.host
        .ip(&["addr", "add", "2001:db8::50/128", "dev", "lo"]);
    for address in ["198.18.0.50", "2001:db8::50"] {
        let address: IpAddr = address.parse().unwrap();
        let service = lab
            .host
            .run(|| UdpSocket::bind(SocketAddr::new(address, 8053)))
            .expect("a host service on another address");
        assert!(
            reaches_by_udp(&c1, &service, SocketAddr::new(address, 8053)),
            "the host service at {address}"
        );
    }
}

/// CPU time (user + system) the process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_agent_backs_off_instead_of_spinning() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // A service manager's low limit, and more clients than it allows.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &agent.pid().to_string(), "--nofile=48:48"])
        .status()
        .unwrap();
    assert!(limited.success());
    let clients: Vec<TcpStream> = (0..80)
        .filter_map(|_| lab.host.run(|| TcpStream::connect(AGENT_HTTP)).ok())
        .collect();
    let before = cpu_ticks(agent.pid());
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(agent.pid()) - before;
    // A spinning accept loop burns all of a CPU: some 300 ticks in 3 s.
    assert!(spent < 60, "the agent used {spent} ticks of CPU in 3 s");
    let log = agent.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("accepting a connection"))
        .count();
    assert!((1..=8).contains(&warnings), "{warnings} warnings:\n{log}");
    // Once the clients go, it serves again.
    drop(clients);
    assert_eq!(http_get(&lab.host, agent_http(), "/health").status, 200);
}
