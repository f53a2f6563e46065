//! Unique egress flows: the fq_codel flow (skb priority) a packet leaves the host in.
use super::fixtures::*;

/// Runs `program` on `frame` arriving with `priority`; its verdict and the priority
/// it leaves with.
fn run_with_priority(ebpf: &Ebpf, program: &str, frame: &[u8], priority: u32) -> (u32, u32) {
    run_with_skb_field(ebpf, program, frame, SKB_PRIORITY_OFFSET, priority)
}

/// Turns unique flows on and gives container 0 flow 3, container 1 flow 4.
fn with_unique_flows(ebpf: &mut Ebpf) {
    enable_unique_flows(ebpf, [(0, 3), (1, 4)]);
}

#[test]
fn with_unique_flows_each_container_leaves_in_its_own_flow() {
    let mut ebpf = datapath();
    with_unique_flows(&mut ebpf);
    let from_c0 = udp4_out(30016, REMOTE_IPV4, 53);
    let from_c0_v6 = tcp6_out(31499, 443);
    let ping_from_c0 = v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &echo(8, 0x4242));
    // Whatever priority the container's socket asked for.
    for priority in [0, 6] {
        for f in [&from_c0, &from_c0_v6, &ping_from_c0] {
            assert_eq!(
                run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, f, priority),
                (REDIRECT, FLOWS_QDISC | 3)
            );
        }
    }
    send_as(&mut ebpf, 1);
    let from_c1 = udp4_out(31500, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &from_c1, 0),
        (REDIRECT, FLOWS_QDISC | 4)
    );
    // What a container sends to the host or another container never reaches the
    // public interface and keeps its priority; so does what is dropped.
    let to_host = udp4_out(31500, HOST_IPV4, 22);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &to_host, 5),
        (REDIRECT, 5)
    );
    let not_owned = udp4_out(30016, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &not_owned, 0),
        (SHOT, 0)
    );
    // The public interface leaves a container's flow alone.
    assert_eq!(
        run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, &from_c1, FLOWS_QDISC | 4),
        (PIPE, FLOWS_QDISC | 4)
    );
}

#[test]
fn with_unique_flows_the_host_leaves_in_its_own_two_flows() {
    let mut ebpf = datapath();
    with_unique_flows(&mut ebpf);
    let host_udp = udp4_out(40000, REMOTE_IPV4, 53);
    let host_tcp6 = tcp6_out(40000, 443);
    let host_ping = v4(HOST_IPV4, REMOTE_IPV4, IPPROTO_ICMP, &echo(8, 7));
    let host_ping6 = v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_ICMPV6, &echo(128, 7));
    // Any priority but a container flow of this qdisc: the socket's own, another
    // qdisc's, the host's flows.
    for priority in [0, 6, 0x0002_0005, FLOWS_QDISC | 2, FLOWS_QDISC | 1] {
        for (f, flow) in [
            (&host_udp, 1),
            (&host_tcp6, 1),
            (&host_ping, 2),
            (&host_ping6, 2),
            (&arp_request(), 2),
        ] {
            assert_eq!(
                run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, f, priority),
                (PIPE, FLOWS_QDISC | flow),
                "priority {priority:#x}"
            );
        }
    }
}

#[test]
fn without_unique_flows_priorities_are_left_alone() {
    let ebpf = datapath();
    let from_c0 = udp4_out(30016, REMOTE_IPV4, 53);
    assert_eq!(
        run_with_priority(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &from_c0, 6),
        (REDIRECT, 6)
    );
    for f in [&from_c0, &arp_request()] {
        assert_eq!(
            run_with_priority(&ebpf, PUBLIC_EGRESS_PROGRAM, f, 6),
            (PIPE, 6)
        );
    }
}
