//! What a container can reach beyond TCP/UDP to its ports, ported from Mesos's tests
//! 5-8 (ICMP external and internal, ARP external, DNS) plus path MTU discovery, for
//! IPv4 and IPv6.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use netiso_tests::{
    isolation::IsolationLab,
    lab::{
        FAR_IPV4, FAR_IPV6, HOST_IPV4, HOST_IPV6, PUBLIC_IFACE, REMOTE_IPV4, REMOTE_IPV6,
        start_tcp_listener,
    },
    netns::Netns,
};

fn one_container() -> IsolationLab {
    let mut lab = IsolationLab::new();
    lab.add_container("c1", "30016-30031", "31000-31499");
    lab
}

pub(super) fn ping(ns: &Netns, dst: IpAddr) -> bool {
    ns.command("ping")
        .args(["-c", "1", "-W", "5", &dst.to_string()])
        .output()
        .expect("running ping")
        .status
        .success()
}

#[test]
fn container_pings_remote_hosts() {
    let lab = one_container();
    let c1 = &lab.container(0).netns;
    for dst in [IpAddr::V4(REMOTE_IPV4), IpAddr::V6(REMOTE_IPV6)] {
        assert!(ping(c1, dst), "container ping {dst}");
        // The host's own pings to the same remote still get their replies.
        assert!(ping(&lab.lab.host, dst), "host ping {dst}");
    }
    // The replies were steered to the container (echo identifiers learned on the way
    // out), and the container sent exactly its two requests.
    let counters = lab.counters(0);
    assert_eq!(
        (counters.tx_packets, counters.rx_packets),
        (2, 2),
        "{counters:?}"
    );
}

#[test]
fn container_pings_its_own_addresses_and_the_remote_pings_the_host() {
    let lab = one_container();
    let c1 = &lab.container(0).netns;
    for dst in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(HOST_IPV4),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(HOST_IPV6),
    ] {
        assert!(ping(c1, dst), "container ping {dst}");
    }
    // ICMP to its own addresses is answered inside the container: nothing crossed.
    let counters = lab.counters(0);
    assert_eq!(
        (counters.tx_packets, counters.rx_packets),
        (0, 0),
        "{counters:?}"
    );
    for dst in [IpAddr::V4(HOST_IPV4), IpAddr::V6(HOST_IPV6)] {
        assert!(ping(&lab.lab.remote, dst), "remote ping {dst}");
    }
    assert_eq!(
        lab.counters(0).rx_packets,
        0,
        "echo requests are the host's"
    );
}

#[test]
fn arp_and_ndp_are_answered_once_and_never_copied_into_containers() {
    let lab = one_container();
    let c1 = &lab.container(0).netns;
    // The host resolves the remote for the container: no neighbour known yet.
    lab.lab.host.ip(&["neigh", "flush", "all"]);
    lab.lab.host.ip(&["-6", "neigh", "flush", "all"]);
    assert!(ping(c1, IpAddr::V4(REMOTE_IPV4)));
    assert!(ping(c1, IpAddr::V6(REMOTE_IPV6)));
    // A remote ARP request for the shared address gets exactly one answer (Mesos
    // copied every ARP packet to every container, so each could answer too).
    let arping = lab.lab.remote.exec(&[
        "arping",
        "-c",
        "3",
        "-I",
        PUBLIC_IFACE,
        &HOST_IPV4.to_string(),
    ]);
    let report = String::from_utf8_lossy(&arping.stdout);
    assert!(report.contains("Received 3 response(s)"), "{report}");
    assert!(!report.contains("extra"), "duplicate ARP answers: {report}");
    // The container never sent ARP or neighbour discovery of its own.
    let neighbours = String::from_utf8(c1.exec(&["ip", "neigh", "show"]).stdout).unwrap();
    assert!(
        neighbours.lines().all(|l| l.contains("PERMANENT")),
        "only the permanent gateway entries: {neighbours}"
    );
}

#[test]
fn container_queries_a_resolver_from_its_ephemeral_ports() {
    let lab = one_container();
    let c1 = &lab.container(0).netns;
    for resolver in [
        SocketAddr::new(IpAddr::V4(REMOTE_IPV4), 53),
        SocketAddr::new(IpAddr::V6(REMOTE_IPV6), 53),
    ] {
        // A tiny resolver in `remote`: answers every query with the query reversed.
        let server = lab
            .lab
            .remote
            .run(|| UdpSocket::bind(resolver).expect("binding :53"));
        let answering = thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).expect("a query");
            buf[..n].reverse();
            server.send_to(&buf[..n], from).expect("answering");
            from
        });
        let (local, answer) = c1.run(|| {
            let any: IpAddr = if resolver.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let client = UdpSocket::bind(SocketAddr::new(any, 0)).expect("binding");
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            client
                .send_to(b"example.test?", resolver)
                .expect("querying");
            let mut buf = [0u8; 512];
            let n = client.recv(&mut buf).expect("an answer");
            (client.local_addr().unwrap(), buf[..n].to_vec())
        });
        assert_eq!(answer, b"?tset.elpmaxe");
        assert!(
            (30016..=30031).contains(&local.port()),
            "source port {local}"
        );
        assert_eq!(answering.join().unwrap().port(), local.port());
    }
}

/// The path MTU the container's kernel has learned for `dst`, if any.
fn learned_mtu(ns: &Netns, dst: IpAddr) -> Option<u32> {
    let route = ns.exec(&["ip", "route", "get", &dst.to_string()]);
    let text = String::from_utf8_lossy(&route.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

#[test]
fn container_learns_the_path_mtu_from_icmp_errors_for_its_flows() {
    let mut lab = one_container();
    let far = lab.lab.add_far_network(1280);
    let far_name = far.name().to_owned();
    let far = Netns::existing(&far_name);
    let c1 = &lab.container(0).netns;
    for (dst, port) in [(IpAddr::V4(FAR_IPV4), 7003), (IpAddr::V6(FAR_IPV6), 7004)] {
        let server = start_tcp_listener(&far, dst, port);
        // 200 kB in full-size segments: without the "fragmentation needed" / "packet
        // too big" reaching the container, the connection would stall.
        let sent = c1
            .command("sh")
            .args([
                "-c",
                &format!("head -c 200000 /dev/zero | nc -N -w 10 {dst} {port}"),
            ])
            .status()
            .expect("running nc");
        assert!(sent.success(), "transfer to {dst}");
        assert_eq!(server.wait_with_output().stdout.len(), 200_000);
        assert_eq!(
            learned_mtu(c1, dst),
            Some(1280),
            "container's path MTU to {dst}"
        );
        assert_eq!(
            learned_mtu(&lab.lab.host, dst),
            None,
            "the host learned nothing"
        );
    }
}
