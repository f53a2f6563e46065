//! Hostile traffic through real interfaces: crafted frames from a container's raw
//! socket (which podman and Docker give containers by default) and from the remote,
//! against the datapath; each refusal checked where the packet would have arrived and
//! in the counter it lands in. (The same decisions, frame by frame: tests/bpf/hostile.rs.)
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use netiso::net::container_network::host_veth_mac;
use netiso_tests::{
    agent::{Agent, agent_http, cli, http_get},
    isolation::IsolationLab,
    lab::{
        HOST_IPV4, HOST_IPV6, Lab, PUBLIC_IFACE, REMOTE_IPV4, REMOTE_IPV6, mac_of, rx_packets,
        send_raw_frames, send_raw_frames_past_qdiscs,
    },
    netns::Netns,
    packets::{
        ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_UDP, fix_ipv4_checksum,
        fix_ipv4_icmp_checksums, fix_ipv6_udp_checksum, frame, icmp_error, ipv4_fragment,
        ipv4_packet, ipv6_fragment, ipv6_packet, udp_segment, with_macs,
    },
    wait::wait_until,
};

/// IPv6's fragment header.
const IPPROTO_FRAGMENT: u8 = 44;

/// A lab with two containers: c1 owns 31000-31499, c2 31500-32000.
fn two_containers() -> IsolationLab {
    let mut lab = IsolationLab::new();
    lab.add_container("c1", "30016-30031", "31000-31499");
    lab.add_container("c2", "30032-30047", "31500-32000");
    lab
}

fn bound(ns: &Netns, address: SocketAddr) -> UdpSocket {
    let socket = ns.run(|| UdpSocket::bind(address).expect("binding"));
    socket
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    socket
}

/// How many bytes the next datagram has, `None` if none comes within the timeout.
fn receive(socket: &UdpSocket) -> Option<usize> {
    let mut buf = [0u8; 4096];
    socket.recv(&mut buf).ok()
}

/// A frame as container `index` would put it on its eth0: from the host's MAC (its
/// eth0 has it) to its gateway (the host end of its veth).
fn from_container(lab: &IsolationLab, index: usize, ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let host_mac = mac_of(&lab.lab.host, PUBLIC_IFACE);
    let gateway = host_veth_mac(lab.container(index).network.slot);
    with_macs(frame(ethertype, packet), gateway, host_mac)
}

/// A frame from the remote to the host's public interface (or to `dst_mac`).
fn from_remote(
    lab: &IsolationLab,
    ethertype: u16,
    packet: &[u8],
    dst_mac: Option<[u8; 6]>,
) -> Vec<u8> {
    let host_mac = mac_of(&lab.lab.host, PUBLIC_IFACE);
    let remote_mac = mac_of(&lab.lab.remote, PUBLIC_IFACE);
    with_macs(
        frame(ethertype, packet),
        dst_mac.unwrap_or(host_mac),
        remote_mac,
    )
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut packet = ipv4_packet(src, dst, IPPROTO_UDP, &udp_segment(sport, dport, 5));
    fix_ipv4_checksum(&mut packet);
    packet
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut packet = ipv6_packet(src, dst, IPPROTO_UDP, &udp_segment(sport, dport, 5));
    fix_ipv6_udp_checksum(&mut packet, 40);
    packet
}

#[test]
fn fragments_reach_only_the_container_their_first_fragment_went_to() {
    let lab = two_containers();
    let (c1, c2) = (&lab.container(0).netns, &lab.container(1).netns);
    let c1_socket = bound(c1, "0.0.0.0:31000".parse().unwrap());
    let c1_socket6 = bound(c1, "[::]:31001".parse().unwrap());
    // A datagram from c2 to c1's port through the host's address, in two fragments
    // (as c2's raw socket may send it): both reach c1, which reassembles it.
    let datagram = udp_segment(30032, 31000, 24);
    let (head, tail) = datagram.split_at(24);
    let mut first = ipv4_fragment(HOST_IPV4, HOST_IPV4, IPPROTO_UDP, 0x5151, 0, true, head);
    fix_ipv4_checksum(&mut first);
    let mut second = ipv4_fragment(HOST_IPV4, HOST_IPV4, IPPROTO_UDP, 0x5151, 3, false, tail);
    fix_ipv4_checksum(&mut second);
    let mut whole6 = ipv6_packet(
        HOST_IPV6,
        HOST_IPV6,
        IPPROTO_UDP,
        &udp_segment(30033, 31001, 24),
    );
    fix_ipv6_udp_checksum(&mut whole6, 40);
    let (head6, tail6) = whole6[40..].split_at(24);
    let fragment6 = |offset_words, more, part: &[u8]| {
        let mut payload = ipv6_fragment(IPPROTO_UDP, offset_words, more, 0x5151);
        payload.extend_from_slice(part);
        ipv6_packet(HOST_IPV6, HOST_IPV6, IPPROTO_FRAGMENT, &payload)
    };
    send_raw_frames(
        c2,
        PUBLIC_IFACE,
        &[
            from_container(&lab, 1, ETH_P_IP, &first),
            from_container(&lab, 1, ETH_P_IP, &second),
            from_container(&lab, 1, ETH_P_IPV6, &fragment6(0, true, head6)),
            from_container(&lab, 1, ETH_P_IPV6, &fragment6(3, false, tail6)),
        ],
    );
    assert_eq!(receive(&c1_socket), Some(24));
    assert_eq!(receive(&c1_socket6), Some(24));
    // A datagram c2's kernel fragments on its way to the remote arrives whole.
    let big = vec![0x42u8; 3000];
    let remote_socket = bound(&lab.lab.remote, "0.0.0.0:9000".parse().unwrap());
    c2.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:30034").unwrap();
        socket.send_to(&big, (REMOTE_IPV4, 9000)).unwrap();
    });
    assert_eq!(receive(&remote_socket), Some(3000));
    // A lone later fragment from c2 whose payload reads like a datagram to c1's port:
    // refused, and c1 sees nothing of it.
    let rx_before = lab.counters(0).rx_packets;
    let mut stray = ipv4_fragment(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        0x7777,
        8,
        false,
        &udp_segment(40000, 31000, 8),
    );
    fix_ipv4_checksum(&mut stray);
    let mut stray_remote = ipv4_fragment(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        0x7778,
        8,
        false,
        &udp_segment(40000, 9000, 8),
    );
    fix_ipv4_checksum(&mut stray_remote);
    send_raw_frames(
        c2,
        PUBLIC_IFACE,
        &[
            from_container(&lab, 1, ETH_P_IP, &stray),
            from_container(&lab, 1, ETH_P_IP, &stray_remote),
        ],
    );
    wait_until(
        "c2 tx_dropped_fragment == 2",
        Duration::from_secs(5),
        || lab.counters(1).tx_dropped_fragment == 2,
    );
    assert_eq!(lab.counters(0).rx_packets, rx_before);
}

#[test]
fn forged_sources_never_leave_a_container() {
    let lab = two_containers();
    let remote4 = bound(&lab.lab.remote, "0.0.0.0:9001".parse().unwrap());
    let remote6 = bound(&lab.lab.remote, "[::]:9002".parse().unwrap());
    let forged = [
        from_container(
            &lab,
            0,
            ETH_P_IP,
            &udp4(Ipv4Addr::new(198, 18, 0, 99), REMOTE_IPV4, 30016, 9001),
        ),
        from_container(
            &lab,
            0,
            ETH_P_IP,
            &udp4(REMOTE_IPV4, REMOTE_IPV4, 30016, 9001),
        ),
        from_container(
            &lab,
            0,
            ETH_P_IPV6,
            &udp6("2001:db8::99".parse().unwrap(), REMOTE_IPV6, 30016, 9002),
        ),
    ];
    send_raw_frames(&lab.container(0).netns, PUBLIC_IFACE, &forged);
    wait_until("c1 tx_dropped_spoofed == 3", Duration::from_secs(5), || {
        lab.counters(0).tx_dropped_spoofed == 3
    });
    assert_eq!(receive(&remote4), None);
    assert_eq!(receive(&remote6), None);
    // The same frames with the container's own address arrive.
    let honest = [
        from_container(
            &lab,
            0,
            ETH_P_IP,
            &udp4(HOST_IPV4, REMOTE_IPV4, 30016, 9001),
        ),
        from_container(
            &lab,
            0,
            ETH_P_IPV6,
            &udp6(HOST_IPV6, REMOTE_IPV6, 30016, 9002),
        ),
    ];
    send_raw_frames(&lab.container(0).netns, PUBLIC_IFACE, &honest);
    assert_eq!(receive(&remote4), Some(5));
    assert_eq!(receive(&remote6), Some(5));
}

/// What `ip route get ADDRESS` says in `ns`.
fn route_to(ns: &Netns, address: &str) -> String {
    String::from_utf8_lossy(&ns.exec(&["ip", "route", "get", address]).stdout).into_owned()
}

#[test]
fn a_container_can_neither_redirect_the_host_nor_shrink_the_path_mtu_of_the_shared_address() {
    let lab = two_containers();
    // A redirect to the host: "to reach the remote, use 198.18.0.99".
    let quoted = udp4(HOST_IPV4, REMOTE_IPV4, 40000, 53);
    let gateway = u32::from(Ipv4Addr::new(198, 18, 0, 99));
    let mut redirect = ipv4_packet(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_ICMP,
        &icmp_error(5, 1, gateway, &quoted),
    );
    fix_ipv4_icmp_checksums(&mut redirect);
    // "Fragmentation needed" to the remote, about what it sent to the container.
    let received = udp4(REMOTE_IPV4, HOST_IPV4, 40000, 31000);
    let mut too_big = ipv4_packet(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_ICMP,
        &icmp_error(3, 4, 1000, &received),
    );
    fix_ipv4_icmp_checksums(&mut too_big);
    send_raw_frames(
        &lab.container(0).netns,
        PUBLIC_IFACE,
        &[
            from_container(&lab, 0, ETH_P_IP, &redirect),
            from_container(&lab, 0, ETH_P_IP, &too_big),
        ],
    );
    wait_until("c1 tx_dropped_icmp == 2", Duration::from_secs(5), || {
        lab.counters(0).tx_dropped_icmp == 2
    });
    let host_route = route_to(&lab.lab.host, "198.18.0.2");
    assert!(!host_route.contains("198.18.0.99"), "{host_route}");
    let remote_route = route_to(&lab.lab.remote, "198.18.0.1");
    assert!(!remote_route.contains("mtu 1000"), "{remote_route}");
    // The host's lo takes no redirects anyway.
    let accept = lab
        .lab
        .host
        .exec(&["sysctl", "-n", "net.ipv4.conf.lo.accept_redirects"]);
    assert_eq!(String::from_utf8_lossy(&accept.stdout).trim(), "0");
}

#[test]
fn multicast_and_link_local_from_a_container_stay_home() {
    let lab = two_containers();
    let remote = &lab.lab.remote;
    let group4 = Ipv4Addr::new(224, 0, 0, 251);
    let group6: Ipv6Addr = "ff02::fb".parse().unwrap();
    let remote_ifindex = remote.run(|| nix::net::if_::if_nametoindex(PUBLIC_IFACE).unwrap());
    let listener4 = bound(remote, "0.0.0.0:5353".parse().unwrap());
    listener4.join_multicast_v4(&group4, &REMOTE_IPV4).unwrap();
    let listener6 = bound(remote, "[::]:5354".parse().unwrap());
    listener6
        .join_multicast_v6(&group6, remote_ifindex)
        .unwrap();
    let remote_link_local = remote
        .exec(&[
            "ip",
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            PUBLIC_IFACE,
            "scope",
            "link",
        ])
        .stdout;
    let remote_link_local: Ipv6Addr = String::from_utf8_lossy(&remote_link_local)
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/64").and_then(|a| a.parse().ok()))
        .expect("the remote's link-local address");
    let frames = [
        from_container(&lab, 0, ETH_P_IP, &udp4(HOST_IPV4, group4, 30016, 5353)),
        from_container(&lab, 0, ETH_P_IPV6, &udp6(HOST_IPV6, group6, 30016, 5354)),
        from_container(
            &lab,
            0,
            ETH_P_IPV6,
            &udp6(HOST_IPV6, "ff05::1:3".parse().unwrap(), 30016, 5354),
        ),
        from_container(
            &lab,
            0,
            ETH_P_IPV6,
            &udp6(HOST_IPV6, remote_link_local, 30016, 5354),
        ),
    ];
    send_raw_frames(&lab.container(0).netns, PUBLIC_IFACE, &frames);
    wait_until(
        "c1 tx_dropped_multicast == 4",
        Duration::from_secs(5),
        || lab.counters(0).tx_dropped_multicast == 4,
    );
    assert_eq!(receive(&listener4), None);
    assert_eq!(receive(&listener6), None);
}

#[test]
fn packets_from_the_network_with_the_hosts_own_source_never_reach_a_container() {
    let lab = two_containers();
    let c1 = bound(&lab.container(0).netns, "0.0.0.0:31000".parse().unwrap());
    let c1_v6 = bound(&lab.container(0).netns, "[::]:31001".parse().unwrap());
    let forged = [
        // From "c2's port" to c1's: c1's answer would go to c2.
        from_remote(
            &lab,
            ETH_P_IP,
            &udp4(HOST_IPV4, HOST_IPV4, 31500, 31000),
            None,
        ),
        from_remote(
            &lab,
            ETH_P_IP,
            &udp4(Ipv4Addr::LOCALHOST, HOST_IPV4, 31500, 31000),
            None,
        ),
        from_remote(
            &lab,
            ETH_P_IPV6,
            &udp6(HOST_IPV6, HOST_IPV6, 31500, 31001),
            None,
        ),
        from_remote(
            &lab,
            ETH_P_IPV6,
            &udp6(
                "::ffff:198.18.0.1".parse().unwrap(),
                HOST_IPV6,
                31500,
                31001,
            ),
            None,
        ),
    ];
    send_raw_frames(&lab.lab.remote, PUBLIC_IFACE, &forged);
    wait_until(
        "c1 rx_dropped_spoofed_source == 4",
        Duration::from_secs(5),
        || lab.counters(0).rx_dropped_spoofed_source == 4,
    );
    assert_eq!(receive(&c1), None);
    assert_eq!(receive(&c1_v6), None);
    let honest = from_remote(
        &lab,
        ETH_P_IP,
        &udp4(REMOTE_IPV4, HOST_IPV4, 40000, 31000),
        None,
    );
    send_raw_frames(&lab.lab.remote, PUBLIC_IFACE, &[honest]);
    assert_eq!(receive(&c1), Some(5));
}

#[test]
fn frames_for_another_mac_are_not_steered_into_a_container() {
    let lab = two_containers();
    let c1 = bound(&lab.container(0).netns, "0.0.0.0:31000".parse().unwrap());
    let other_mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let packet = udp4(REMOTE_IPV4, HOST_IPV4, 40000, 31000);
    send_raw_frames(
        &lab.lab.remote,
        PUBLIC_IFACE,
        &[from_remote(&lab, ETH_P_IP, &packet, Some(other_mac))],
    );
    assert_eq!(receive(&c1), None);
    assert_eq!(lab.counters(0).rx_packets, 0);
    send_raw_frames(
        &lab.lab.remote,
        PUBLIC_IFACE,
        &[from_remote(&lab, ETH_P_IP, &packet, None)],
    );
    assert_eq!(receive(&c1), Some(5));
}

/// Starts `ping -e ID` (a raw socket with that identifier) to `dst` in `ns`: 4
/// requests, 0.3 s apart.
fn start_ping(ns: &Netns, id: u16, dst: IpAddr) -> std::process::Child {
    ns.command("ping")
        .args([
            "-e",
            &id.to_string(),
            "-c",
            "4",
            "-i",
            "0.3",
            "-w",
            "8",
            &dst.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting ping")
}

/// How many replies the ping got.
fn replies(ping: std::process::Child) -> String {
    let output = ping.wait_with_output().expect("waiting for ping");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn echo_identifiers_are_the_containers_own_and_never_the_hosts() {
    let lab = two_containers();
    for dst in [IpAddr::V4(REMOTE_IPV4), IpAddr::V6(REMOTE_IPV6)] {
        // The host pings with an identifier in c1's ephemeral range; then both
        // containers ping the same remote with that identifier too.
        let host = start_ping(&lab.lab.host, 30020, dst);
        std::thread::sleep(Duration::from_millis(400));
        let c1 = start_ping(&lab.container(0).netns, 30020, dst);
        let c2 = start_ping(&lab.container(1).netns, 30020, dst);
        for (who, ping) in [("host", host), ("c1", c1), ("c2", c2)] {
            let summary = replies(ping);
            assert!(
                summary.contains("4 packets transmitted, 4 received"),
                "{who} to {dst}: {summary}"
            );
        }
    }
}

#[test]
fn a_container_cannot_skip_its_egress_limit_with_a_raw_socket() {
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &["--egress_rate_limit_per_container=125000B"]);
    let id = lab.container_id("raw");
    let (ok, _, stderr) = cli(&lab, &["container", "create", &id]);
    assert!(ok, "{stderr}");
    let container = Netns::existing(&format!("netiso-{id}"));
    // 4.2 MB of 1400-byte frames straight to the device, past the htb on its eth0.
    let host_mac = mac_of(&lab.host, PUBLIC_IFACE);
    let gateway = mac_of_gateway(&container);
    let packet = udp4(HOST_IPV4, REMOTE_IPV4, 30016, 9);
    let mut packet = packet;
    packet.resize(1400 - 14, 0);
    let length = (packet.len() as u16).to_be_bytes();
    packet[2..4].copy_from_slice(&length);
    fix_ipv4_checksum(&mut packet);
    let frames = vec![with_macs(frame(ETH_P_IP, &packet), gateway, host_mac); 3000];
    let before = rx_packets(&lab.remote, PUBLIC_IFACE);
    let started = Instant::now();
    send_raw_frames_past_qdiscs(&container, PUBLIC_IFACE, &frames);
    std::thread::sleep(Duration::from_millis(300));
    let elapsed = started.elapsed().as_secs_f64();
    let arrived = rx_packets(&lab.remote, PUBLIC_IFACE) - before;
    // At most what the limit allows in that time, with the policer's margin (a
    // quarter, and a GSO packet per 100 ms window), and some of the remote's own.
    let windows = (elapsed / 0.1).ceil() + 1.0;
    let allowed = (windows * (12_500.0 * 1.25 + 65_536.0) / 1400.0) as u64 + 20;
    assert!(
        arrived <= allowed,
        "{arrived} frames arrived in {elapsed:.2}s; at most {allowed}"
    );
    let statistics = http_get(&lab.host, agent_http(), "/monitor/statistics").json();
    let dropped =
        statistics[0]["statistics"]["netiso_datapath_statistics"]["tx_dropped_rate_limit"]
            .as_u64()
            .unwrap();
    assert!(dropped >= 3000 - allowed, "{dropped}");
}

/// The MAC of the container's gateway: its neighbour entry for 169.254.1.1.
fn mac_of_gateway(container: &Netns) -> [u8; 6] {
    let output = container.exec(&["ip", "neigh", "show", "169.254.1.1"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let address = text
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_else(|| panic!("no gateway entry: {text}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(address.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}
