//! Port-range isolation on a real kernel: containers share the host's addresses, and
//! the eBPF datapath decides by port which stack gets each packet. Mesos's port layout:
//! container 1 owns 31000-31499, container 2 owns 31500-32000, 32502 is nobody's.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use netiso_tests::{
    isolation::IsolationLab,
    lab::{HOST_IPV4, HOST_IPV6, PUBLIC_IFACE, Proto, REMOTE_IPV4, REMOTE_IPV6, send_udp},
    lab::{send_tcp, start_nc_server, start_tcp_listener},
    wait::wait_until,
};

const C1_PORTS: &str = "31000-31499";
const C1_EPHEMERAL: &str = "30016-30031";
const C2_PORTS: &str = "31500-32000";
const C2_EPHEMERAL: &str = "30032-30047";
const VALID_PORT: u16 = 31001;
const INVALID_PORT: u16 = 32502;

fn two_containers() -> IsolationLab {
    let mut lab = IsolationLab::new();
    lab.add_container("c1", C1_EPHEMERAL, C1_PORTS);
    lab.add_container("c2", C2_EPHEMERAL, C2_PORTS);
    lab
}

/// A UDP socket bound to `addr` in `netns`, waiting at most 10 seconds per datagram.
fn udp_socket_in(netns: &netiso_tests::netns::Netns, addr: SocketAddr) -> UdpSocket {
    let socket = netns.run(|| UdpSocket::bind(addr).expect("binding in the container"));
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

fn host_addresses() -> [IpAddr; 2] {
    [IpAddr::V4(HOST_IPV4), IpAddr::V6(HOST_IPV6)]
}

#[test]
fn container_network_shares_the_hosts_addresses_mac_and_route_mtu() {
    let lab = two_containers();
    let c1 = lab.container(0);
    let show = String::from_utf8(
        c1.netns
            .exec(&["ip", "-o", "addr", "show", "dev", PUBLIC_IFACE])
            .stdout,
    )
    .unwrap();
    assert!(show.contains(&format!("inet {HOST_IPV4}/32")), "{show}");
    assert!(show.contains(&format!("inet6 {HOST_IPV6}/128")), "{show}");
    assert!(
        !show.contains("fe80"),
        "no link-local address of its own: {show}"
    );
    let link = String::from_utf8(
        c1.netns
            .exec(&["ip", "-o", "link", "show", "dev", PUBLIC_IFACE])
            .stdout,
    )
    .unwrap();
    let host_mac = lab
        .host_network
        .public
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(link.contains(&format!("link/ether {host_mac}")), "{link}");
    // The device takes loopback-sized packets between containers; the routes keep
    // what goes to the network within the public MTU.
    assert!(link.contains("mtu 65535"), "{link}");
    let mtu = lab.host_network.public.mtu;
    for family in ["-4", "-6"] {
        let routes =
            String::from_utf8(c1.netns.exec(&["ip", family, "route", "show"]).stdout).unwrap();
        assert!(
            routes
                .lines()
                .any(|r| r.starts_with("default") && r.contains(&format!("mtu {mtu}"))),
            "{routes}"
        );
    }
    let range = c1
        .netns
        .exec(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]);
    assert_eq!(
        String::from_utf8_lossy(&range.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["30016", "30031"]
    );
    let neighbours = String::from_utf8(c1.netns.exec(&["ip", "neigh", "show"]).stdout).unwrap();
    assert!(
        neighbours.contains("169.254.1.1") && neighbours.contains("PERMANENT"),
        "{neighbours}"
    );
}

#[test]
fn remote_tcp_to_an_owned_port_reaches_the_owner_only() {
    let lab = two_containers();
    let c1 = &lab.container(0).netns;
    for addr in host_addresses() {
        let server = start_tcp_listener(c1, addr, VALID_PORT);
        assert!(send_tcp(
            &lab.lab.remote,
            SocketAddr::new(addr, VALID_PORT),
            "hello1"
        ));
        assert_eq!(
            String::from_utf8_lossy(&server.wait_with_output().stdout),
            "hello1"
        );
    }
    assert!(lab.counters(0).rx_packets > 0);
    assert_eq!(
        lab.counters(1).rx_packets,
        0,
        "container 2 received nothing"
    );
}

#[test]
fn ports_owned_by_no_container_still_reach_host_services() {
    let lab = two_containers();
    for addr in host_addresses() {
        // Both the host and container 1 listen on a port nobody owns: the host wins.
        let host_server = start_tcp_listener(&lab.lab.host, addr, INVALID_PORT);
        let container_server = start_tcp_listener(&lab.container(0).netns, addr, INVALID_PORT);
        assert!(send_tcp(
            &lab.lab.remote,
            SocketAddr::new(addr, INVALID_PORT),
            "to-host"
        ));
        assert_eq!(
            String::from_utf8_lossy(&host_server.wait_with_output().stdout),
            "to-host"
        );
        drop(container_server);
    }
    assert_eq!(
        lab.counters(0).rx_packets,
        0,
        "the container's listener got nothing"
    );
}

#[test]
fn remote_udp_is_counted_exactly_and_delivered_to_the_owner() {
    let lab = two_containers();
    let c2 = &lab.container(1).netns;
    let count = 40;
    let mut received = 0;
    for (addr, port) in [
        (IpAddr::V4(HOST_IPV4), 31600),
        (IpAddr::V6(HOST_IPV6), 31601),
    ] {
        let socket = udp_socket_in(c2, SocketAddr::new(addr, port));
        send_udp(&lab.lab.remote, SocketAddr::new(addr, port), count, 32);
        let mut buf = [0u8; 64];
        for _ in 0..count {
            assert_eq!(socket.recv(&mut buf).expect("datagram from remote"), 32);
            received += 1;
        }
    }
    let frame_bytes = |ip_hlen: u64| count as u64 * (14 + ip_hlen + 8 + 32);
    let c2_counters = lab.counters(1);
    assert_eq!(received, 2 * count);
    assert_eq!(c2_counters.rx_packets, 2 * count as u64);
    assert_eq!(c2_counters.rx_bytes, frame_bytes(20) + frame_bytes(40));
    // Container 1 got nothing. (Its kernel's own MLD reports, dropped as link
    // control, show up in tx_dropped_other, so that field is not compared.)
    let c1_counters = lab.counters(0);
    assert_eq!((c1_counters.rx_packets, c1_counters.tx_packets), (0, 0));
}

#[test]
fn container_reaches_remote_from_its_ephemeral_ports() {
    let lab = two_containers();
    let c1 = &lab.container(0).netns;
    for (remote, port) in [
        (IpAddr::V4(REMOTE_IPV4), 7000),
        (IpAddr::V6(REMOTE_IPV6), 7001),
    ] {
        let server = start_tcp_listener(&lab.lab.remote, remote, port);
        assert!(send_tcp(c1, SocketAddr::new(remote, port), "from-c1"));
        assert_eq!(
            String::from_utf8_lossy(&server.wait_with_output().stdout),
            "from-c1"
        );
    }
    let counters = lab.counters(0);
    assert!(
        counters.tx_packets > 0 && counters.rx_packets > 0,
        "{counters:?}"
    );
    assert_eq!(counters.tx_dropped_port_not_owned, 0);
}

#[test]
fn sending_from_a_port_the_container_does_not_own_is_dropped_and_counted() {
    let lab = two_containers();
    let c1 = &lab.container(0).netns;
    let count = 25;
    for (host, remote, sport) in [
        (IpAddr::V4(HOST_IPV4), IpAddr::V4(REMOTE_IPV4), INVALID_PORT),
        (IpAddr::V6(HOST_IPV6), IpAddr::V6(REMOTE_IPV6), 31500), // container 2's port
    ] {
        let remote_server = start_nc_server(&lab.lab.remote, Proto::Udp, 7002);
        c1.run(|| {
            let socket = UdpSocket::bind(SocketAddr::new(host, sport)).expect("binding");
            for _ in 0..count {
                socket
                    .send_to(b"spoof", SocketAddr::new(remote, 7002))
                    .expect("sending");
            }
        });
        drop(remote_server);
    }
    wait_until("the drops to be counted", Duration::from_secs(10), || {
        lab.counters(0).tx_dropped_port_not_owned >= 2 * count as u64
    });
    let counters = lab.counters(0);
    assert_eq!(counters.tx_dropped_port_not_owned, 2 * count as u64);
    assert_eq!(counters.tx_packets, 0, "nothing got through");
}

/// Remote → container 1 over TCP, host → container 2 over 127.0.0.1 UDP, and
/// container 1 → remote: the three paths an agent restart must not break.
fn check_paths(lab: &IsolationLab, round: &str) {
    let c1 = &lab.container(0).netns;
    let server = start_tcp_listener(c1, IpAddr::V4(HOST_IPV4), VALID_PORT);
    assert!(
        send_tcp(
            &lab.lab.remote,
            SocketAddr::new(IpAddr::V4(HOST_IPV4), VALID_PORT),
            round
        ),
        "remote to container 1 ({round})"
    );
    assert_eq!(
        String::from_utf8_lossy(&server.wait_with_output().stdout),
        round
    );
    let c2_socket = lab
        .container(1)
        .netns
        .run(|| UdpSocket::bind("127.0.0.1:31700").expect("binding in container 2"));
    c2_socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    lab.lab.host.run(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(round.as_bytes(), "127.0.0.1:31700").unwrap();
    });
    let mut buf = [0u8; 64];
    let n = c2_socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("host to container 2 ({round}): {e}"));
    assert_eq!(&buf[..n], round.as_bytes());
    let remote_server = start_tcp_listener(&lab.lab.remote, IpAddr::V4(REMOTE_IPV4), 7005);
    assert!(send_tcp(
        c1,
        SocketAddr::new(IpAddr::V4(REMOTE_IPV4), 7005),
        round
    ));
    assert_eq!(
        String::from_utf8_lossy(&remote_server.wait_with_output().stdout),
        round
    );
}

#[test]
fn containers_keep_working_while_the_datapath_is_down_and_after_it_is_taken_over() {
    let mut lab = two_containers();
    check_paths(&lab, "running");
    let running = lab.counters(0);
    // Like an agent exiting or being killed: the kernel keeps attachments and maps.
    lab.stop_datapath();
    check_paths(&lab, "down");
    let down = lab.counters(0);
    assert!(
        down.rx_packets > running.rx_packets,
        "still counted while down"
    );
    // Like a restarted agent: it takes the attachments over and keeps the counters.
    lab.start_datapath();
    // Not reset: nothing was steered meanwhile, and no counter went backwards (the
    // container's own MLD reports may still add to tx_dropped_other).
    let taken_over = lab.counters(0);
    assert_eq!(
        (
            taken_over.rx_packets,
            taken_over.rx_bytes,
            taken_over.tx_packets,
            taken_over.tx_bytes
        ),
        (
            down.rx_packets,
            down.rx_bytes,
            down.tx_packets,
            down.tx_bytes
        )
    );
    assert!(taken_over.tx_dropped_other >= down.tx_dropped_other);
    check_paths(&lab, "taken-over");
    // Exactly one attachment per hook after the take-over: every datagram is steered
    // and counted once.
    let c2 = lab.counters(1);
    let socket = lab
        .container(1)
        .netns
        .run(|| UdpSocket::bind("0.0.0.0:31800").unwrap());
    send_udp(
        &lab.lab.remote,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), 31800),
        30,
        8,
    );
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..30 {
        socket.recv(&mut buf).expect("a datagram");
    }
    assert_eq!(lab.counters(1).rx_packets, c2.rx_packets + 30);
}

#[test]
fn fragmented_datagrams_from_the_network_reach_the_owner_of_their_port() {
    // A 4000-byte answer (a large DNS reply, say) leaves the remote in three
    // fragments; only the first carries the port, and all must reach container 2.
    let lab = two_containers();
    let c2 = &lab.container(1).netns;
    for (addr, port) in [
        (IpAddr::V4(HOST_IPV4), 31700),
        (IpAddr::V6(HOST_IPV6), 31701),
    ] {
        let socket = udp_socket_in(c2, SocketAddr::new(addr, port));
        send_udp(&lab.lab.remote, SocketAddr::new(addr, port), 3, 4000);
        let mut buf = [0u8; 8192];
        for i in 0..3 {
            let received = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} to {addr}: {e}"));
            assert_eq!(received, 4000);
        }
    }
    // Three fragments per datagram, six datagrams.
    assert!(lab.counters(1).rx_packets >= 18, "{:?}", lab.counters(1));
    assert_eq!(lab.counters(0).rx_packets, 0);
}
