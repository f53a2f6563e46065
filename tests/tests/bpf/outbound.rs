//! What containers send: owned ports leave, the rest is dropped and counted by
//! reason; echo conversations; local destinations; loopback semantics.
use super::fixtures::*;

#[test]
fn container_traffic_from_owned_ports_leaves_and_is_counted() {
    let ebpf = datapath();
    let from_ephemeral = udp4_out(30016, REMOTE_IPV4, 53);
    let from_port = tcp6_out(31499, 443);
    for f in [&from_ephemeral, &from_port] {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), REDIRECT);
    }
    let c0 = counters(&ebpf, 0);
    assert_eq!(c0.tx_packets, 2);
    let bytes: usize = [&from_ephemeral, &from_port].iter().map(|f| f.len()).sum();
    assert_eq!(c0.tx_bytes, bytes as u64);
}

#[test]
fn container_traffic_is_dropped_and_counted_by_reason() {
    let ebpf = datapath();
    let mut mld = ipv6_ext_header(IPPROTO_ICMPV6, 0);
    mld.extend_from_slice(&[143, 0, 0, 0, 0, 0, 0, 0]);
    let mut short_udp = udp4_out(30016, REMOTE_IPV4, 53);
    short_udp.truncate(14 + 20 + 4);
    let mut bad_ihl = udp4_out(30016, REMOTE_IPV4, 53);
    bad_ihl[14] = 0x44; // IHL 4 words: shorter than a header
    let cases = [
        (udp4_out(32502, REMOTE_IPV4, 53), "port"),
        (udp4_out(31500, REMOTE_IPV4, 53), "port"), // container 1's port
        (
            v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_UDP, &udp_segment(22, 53, 4)),
            "port",
        ),
        (short_udp, "malformed"),
        (bad_ihl, "malformed"),
        (arp_request(), "other"),
        (
            v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_GRE, &[0, 0, 8, 0]),
            "other",
        ),
        (v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_HOPOPTS, &mld), "other"),
        (
            v6(
                HOST_IPV6,
                REMOTE_IPV6,
                IPPROTO_ICMPV6,
                &[135, 0, 0, 0, 0, 0, 0, 0],
            ),
            "other",
        ),
        (frame(ETH_P_ARP, &[]), "other"),
    ];
    for (f, _) in &cases {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), SHOT);
    }
    let count = |reason| cases.iter().filter(|(_, r)| *r == reason).count() as u64;
    assert_eq!(
        counters(&ebpf, 0),
        ContainerCounters {
            tx_dropped_port_not_owned: count("port"),
            tx_dropped_malformed: count("malformed"),
            tx_dropped_other: count("other"),
            ..Default::default()
        }
    );
}

/// The echo identifier of the ICMP message in `frame`, and whether the message's
/// checksum is right.
fn echo_id_and_checksum(frame: &[u8]) -> (u16, bool) {
    let (l4, sum) = l4_sum(frame);
    (u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]), sum == 0)
}

/// An echo message of `icmp_type` with `id` and a right checksum, in a frame.
fn echo_frame(src: IpAddr, dst: IpAddr, icmp_type: u8, id: u16) -> Vec<u8> {
    let mut frame = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4(s, d, IPPROTO_ICMP, &echo(icmp_type, id)),
        (IpAddr::V6(s), IpAddr::V6(d)) => v6(s, d, IPPROTO_ICMPV6, &echo(icmp_type, id)),
        _ => unreachable!("one family"),
    };
    // With the checksum field zero, the sum over the message is the checksum.
    let (l4, sum) = l4_sum(&frame);
    frame[l4 + 2..l4 + 4].copy_from_slice(&sum.to_be_bytes());
    frame
}

#[test]
fn container_echo_requests_leave_with_identifiers_it_owns_and_replies_get_theirs_back() {
    let ebpf = datapath();
    let (host, remote) = (IpAddr::V4(HOST_IPV4), IpAddr::V4(REMOTE_IPV4));
    let (host6, remote6) = (IpAddr::V6(HOST_IPV6), IpAddr::V6(REMOTE_IPV6));
    for (from, to, request_type, reply_type) in [(host, remote, 8, 0), (host6, remote6, 128, 129)] {
        // Its socket chose 0x4242, which is not the container's: it leaves translated
        // into its ephemeral range (30016-30031), checksum right.
        let (verdict, sent) = run_out(
            &ebpf,
            CONTAINER_VETH_INGRESS_PROGRAM,
            &echo_frame(from, to, request_type, 0x4242),
        );
        assert_eq!(verdict, REDIRECT);
        let (id, checksum_ok) = echo_id_and_checksum(&sent);
        assert!((30016..=30031).contains(&id), "{id}");
        assert!(checksum_ok);
        let conversation = echo_conversation(&ebpf, to, id).expect("remembered");
        assert_eq!(conversation.owner, PortOwner::new(0, TEST_RUN_IFINDEX));
        // The reply comes back to the container with 0x4242 again.
        let (verdict, received) = run_out(
            &ebpf,
            PUBLIC_INGRESS_PROGRAM,
            &echo_frame(to, from, reply_type, id),
        );
        assert_eq!(verdict, REDIRECT);
        assert_eq!(echo_id_and_checksum(&received), (0x4242, true));
        // An identifier of its own leaves as it is.
        let (_, sent) = run_out(
            &ebpf,
            CONTAINER_VETH_INGRESS_PROGRAM,
            &echo_frame(from, to, request_type, 30020),
        );
        assert_eq!(echo_id_and_checksum(&sent), (30020, true));
    }
    let unknown = v4(REMOTE_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(0, 0x4243));
    let other_remote = v4(OTHER_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(0, 30020));
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &unknown), PIPE);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &other_remote), PIPE);
    let c0 = counters(&ebpf, 0);
    assert_eq!((c0.rx_packets, c0.tx_packets), (2, 4));
}

#[test]
fn the_hosts_echo_conversations_are_never_captured_by_a_container() {
    let ebpf = datapath();
    let (host, remote) = (IpAddr::V4(HOST_IPV4), IpAddr::V4(REMOTE_IPV4));
    // The host pings the remote with an identifier in the container's range...
    let host_request = echo_frame(host, remote, 8, 30020);
    assert_eq!(run(&ebpf, PUBLIC_EGRESS_PROGRAM, &host_request), PIPE);
    assert_eq!(
        echo_conversation(&ebpf, remote, 30020).map(|c| c.owner),
        Some(PortOwner::default())
    );
    // ... and the container sends a request with that very identifier: it leaves with
    // another one, and the host keeps its conversation.
    let (verdict, sent) = run_out(
        &ebpf,
        CONTAINER_VETH_INGRESS_PROGRAM,
        &echo_frame(host, remote, 8, 30020),
    );
    assert_eq!(verdict, REDIRECT);
    let (id, checksum_ok) = echo_id_and_checksum(&sent);
    assert!(
        id != 30020 && (30016..=30031).contains(&id) && checksum_ok,
        "{id}"
    );
    // The host's replies stay the host's; the container's reach the container.
    assert_eq!(
        run(
            &ebpf,
            PUBLIC_INGRESS_PROGRAM,
            &echo_frame(remote, host, 0, 30020)
        ),
        PIPE
    );
    assert_eq!(
        run(
            &ebpf,
            PUBLIC_INGRESS_PROGRAM,
            &echo_frame(remote, host, 0, id)
        ),
        REDIRECT
    );
    assert_eq!(counters(&ebpf, 0).rx_packets, 1);
}

#[test]
fn container_traffic_to_local_addresses_goes_to_the_port_owner_or_the_host() {
    let ebpf = datapath();
    let to_c1 = udp4_out(30016, HOST_IPV4, 31500);
    let to_c1_loopback = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_TCP,
        &tcp_segment(31001, 31600),
    );
    let to_host_service = udp4_out(30016, LOCALHOST4, 22);
    for f in [&to_c1, &to_c1_loopback, &to_host_service] {
        assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f), REDIRECT);
    }
    assert_eq!(counters(&ebpf, 1), rx(&[&to_c1, &to_c1_loopback]));
    assert_eq!(counters(&ebpf, 0).tx_packets, 3);
}

#[test]
fn what_a_container_sends_to_the_network_must_fit_the_public_mtu() {
    static MTU: u32 = 1500;
    let ebpf = datapath_with_public_mtu(&MTU);
    // UDP payloads that make IP packets of exactly the MTU, and one byte more.
    let fits = v4(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(30016, 53, 1472),
    );
    let too_long = v4(
        HOST_IPV4,
        REMOTE_IPV4,
        IPPROTO_UDP,
        &udp_segment(30016, 53, 1473),
    );
    let too_long6 = v6(
        HOST_IPV6,
        REMOTE_IPV6,
        IPPROTO_UDP,
        &udp_segment(30016, 53, 1453),
    );
    // Longer packets between containers, through the host's address, are fine (test
    // runs take frames up to a page).
    let local = v4(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &udp_segment(30016, 31500, 2000),
    );
    assert_eq!(fits.len(), 14 + 1500);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &fits), REDIRECT);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &too_long), SHOT);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &too_long6), SHOT);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &local), REDIRECT);
    let sent = counters(&ebpf, 0);
    assert_eq!((sent.tx_packets, sent.tx_dropped_malformed), (2, 2));
    assert_eq!(counters(&ebpf, 1), rx(&[&local]));
}

// ---- host loopback, container eth0 and container lo ----

#[test]
fn host_loopback_traffic_to_container_ports_is_steered() {
    let ebpf = datapath();
    let to_c0 = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_UDP,
        &udp_segment(40000, 31001, 4),
    );
    let to_c1 = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_TCP,
        &tcp_segment(40000, 31500),
    );
    let via_host_ip = v4(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_TCP,
        &tcp_segment(40000, 31002),
    );
    let host_service = v4(LOCALHOST4, LOCALHOST4, IPPROTO_TCP, &tcp_segment(40000, 22));
    for f in [&to_c0, &to_c1, &via_host_ip] {
        assert_eq!(run(&ebpf, HOST_LO_INGRESS_PROGRAM, f), REDIRECT);
    }
    assert_eq!(run(&ebpf, HOST_LO_INGRESS_PROGRAM, &host_service), PIPE);
    assert_eq!(counters(&ebpf, 0), rx(&[&to_c0, &via_host_ip]));
    assert_eq!(counters(&ebpf, 1), rx(&[&to_c1]));
}

#[test]
fn container_eth0_hands_loopback_destinations_to_lo() {
    let ebpf = datapath();
    let to_lo4 = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_UDP,
        &udp_segment(1, 31001, 4),
    );
    let to_lo6 = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_UDP,
        &udp_segment(1, 31001, 4),
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &to_lo4),
        REDIRECT
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &to_lo6),
        REDIRECT
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &udp4_in(31001)),
        PIPE
    );
    assert_eq!(
        run(&ebpf, CONTAINER_ETH0_INGRESS_PROGRAM, &arp_request()),
        PIPE
    );
}

#[test]
fn container_lo_keeps_its_own_ports_and_sends_the_rest_out() {
    let ebpf = datapath();
    let own = v4(
        HOST_IPV4,
        HOST_IPV4,
        IPPROTO_TCP,
        &tcp_segment(30016, 31001),
    );
    let others = v4(
        LOCALHOST4,
        LOCALHOST4,
        IPPROTO_TCP,
        &tcp_segment(30016, 31500),
    );
    let host = v6(
        LOCALHOST6,
        LOCALHOST6,
        IPPROTO_UDP,
        &udp_segment(30016, 22, 4),
    );
    let ping = v4(HOST_IPV4, HOST_IPV4, IPPROTO_ICMP, &echo(8, 1));
    for program in container_lo_programs() {
        assert_eq!(run(&ebpf, program, &own), PIPE, "{program}");
        assert_eq!(run(&ebpf, program, &others), REDIRECT, "{program}");
        assert_eq!(run(&ebpf, program, &host), REDIRECT, "{program}");
        assert_eq!(run(&ebpf, program, &ping), PIPE, "{program}");
    }
}

#[test]
fn a_netkit_containers_packets_are_marked_as_its_own_until_they_leave() {
    let ebpf = datapath();
    let (host, remote) = (IpAddr::V4(HOST_IPV4), IpAddr::V4(REMOTE_IPV4));
    let request = echo_frame(host, remote, 8, 30020);
    // The netkit program marks what it sends to the network; the veth's needs not
    // (its packets arrived on an interface).
    let (verdict, mark) = run_with_skb_field(
        &ebpf,
        CONTAINER_NETKIT_PEER_PROGRAM,
        &request,
        SKB_MARK_OFFSET,
        0,
    );
    assert_eq!((verdict, mark), (REDIRECT, CONTAINER_PACKET_MARK));
    let (_, mark) = run_with_skb_field(
        &ebpf,
        CONTAINER_VETH_INGRESS_PROGRAM,
        &request,
        SKB_MARK_OFFSET,
        0,
    );
    assert_eq!(mark, 0);
    let conversation = || echo_conversation(&ebpf, remote, 30020).map(|c| c.owner);
    assert_eq!(conversation(), Some(PortOwner::new(0, TEST_RUN_IFINDEX)));
    // The public interface's egress takes the marked request for the container's,
    // and clears the mark.
    let (verdict, mark) = run_with_skb_field(
        &ebpf,
        PUBLIC_EGRESS_PROGRAM,
        &request,
        SKB_MARK_OFFSET,
        CONTAINER_PACKET_MARK,
    );
    assert_eq!((verdict, mark), (PIPE, 0));
    assert_eq!(conversation(), Some(PortOwner::new(0, TEST_RUN_IFINDEX)));
    // Replies reach the container.
    let reply = echo_frame(remote, host, 0, 30020);
    assert_eq!(run(&ebpf, PUBLIC_INGRESS_PROGRAM, &reply), REDIRECT);
    // An unmarked request is the host's, and any other mark is left alone.
    let (_, mark) = run_with_skb_field(&ebpf, PUBLIC_EGRESS_PROGRAM, &request, SKB_MARK_OFFSET, 7);
    assert_eq!(mark, 7);
    assert_eq!(conversation(), Some(PortOwner::default()));
}

#[test]
fn a_netkit_container_sends_what_is_dropped_to_no_device() {
    let ebpf = datapath();
    // From port 40000, which container 0 does not own.
    let unowned = udp4_out(40000, REMOTE_IPV4, 53);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned), SHOT);
    // The netkit program's drop is a redirect (to ifindex 0, which the kernel frees),
    // so that the container's send succeeds as on a veth; counted alike.
    assert_eq!(
        run(&ebpf, CONTAINER_NETKIT_PEER_PROGRAM, &unowned),
        REDIRECT
    );
    let counted = counters(&ebpf, 0);
    assert_eq!(counted.tx_dropped_port_not_owned, 2, "{counted:?}");
    assert_eq!(counted.tx_packets, 0, "{counted:?}");
}
