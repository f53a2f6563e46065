//! Published ports whose container port differs (`-p 31080:80`), translated without
//! state: inbound on every path to the container port, outbound from it to the host
//! port, TCP and UDP, IPv4 and IPv6, ICMP errors quoting such packets; every checksum
//! right afterwards.
use netiso_common::{CONTAINER_PORT_TRANSLATIONS_MAP, ContainerPort, PORT_TRANSLATIONS_MAP};

use super::fixtures::*;

/// Container 0 publishes port 80 on host port 31080 (one of its own); container 1
/// publishes 8080 on 31580.
const C0_HOST_PORT: u16 = 31080;
const C0_PORT: u16 = 80;
const C1_HOST_PORT: u16 = 31580;
const C1_PORT: u16 = 8080;

fn translating_datapath() -> Ebpf {
    let mut ebpf = datapath();
    for (slot, host_port, port) in [(0, C0_HOST_PORT, C0_PORT), (1, C1_HOST_PORT, C1_PORT)] {
        let mut inbound: Array<_, u16> =
            Array::try_from(ebpf.map_mut(PORT_TRANSLATIONS_MAP).unwrap()).unwrap();
        inbound.set(u32::from(host_port), port, 0).unwrap();
        let mut outbound: HashMap<_, ContainerPort, u16> =
            HashMap::try_from(ebpf.map_mut(CONTAINER_PORT_TRANSLATIONS_MAP).unwrap()).unwrap();
        let key = ContainerPort {
            slot,
            port,
            _pad: 0,
        };
        outbound.insert(key, host_port, 0).unwrap();
    }
    ebpf
}

/// A TCP or UDP frame between `src` and `dst` (one family), checksum right.
fn segment(protocol: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
    let l4 = if protocol == IPPROTO_TCP {
        tcp_segment(sport, dport)
    } else {
        udp_segment(sport, dport, 24)
    };
    with_l4_checksum(match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4(s, d, protocol, &l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => v6(s, d, protocol, &l4),
        _ => unreachable!("one family"),
    })
}

/// The ports of the transport message of `frame`, and whether its checksum is right.
fn ports_and_checksum(frame: &[u8]) -> (u16, u16, bool) {
    let (l4, sum) = l4_sum(frame);
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    (port(l4), port(l4 + 2), sum == 0)
}

const FAMILIES: [(IpAddr, IpAddr); 2] = [
    (IpAddr::V4(HOST_IPV4), IpAddr::V4(REMOTE_IPV4)),
    (IpAddr::V6(HOST_IPV6), IpAddr::V6(REMOTE_IPV6)),
];

#[test]
fn a_published_host_port_reaches_the_container_port_on_every_path() {
    let ebpf = translating_datapath();
    for (host, remote) in FAMILIES {
        let localhost = if host.is_ipv4() {
            IpAddr::V4(LOCALHOST4)
        } else {
            IpAddr::V6(LOCALHOST6)
        };
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            let cases = [
                // From the network, to container 0's published port.
                (PUBLIC_INGRESS_PROGRAM, remote, host, C0_HOST_PORT, C0_PORT),
                // From the host, at its address and at localhost.
                (HOST_LO_INGRESS_PROGRAM, host, host, C0_HOST_PORT, C0_PORT),
                (
                    HOST_LO_INGRESS_PROGRAM,
                    localhost,
                    localhost,
                    C0_HOST_PORT,
                    C0_PORT,
                ),
                // From container 0 to container 1's published port.
                (
                    CONTAINER_VETH_INGRESS_PROGRAM,
                    host,
                    host,
                    C1_HOST_PORT,
                    C1_PORT,
                ),
            ];
            for (program, src, dst, host_port, port) in cases {
                let sent = segment(protocol, src, 30020, dst, host_port);
                let (verdict, delivered) = run_out(&ebpf, program, &sent);
                assert_eq!(verdict, REDIRECT, "{program} {protocol} {dst}");
                assert_eq!(
                    ports_and_checksum(&delivered),
                    (30020, port, true),
                    "{program} {protocol} {dst}: the container port, checksum right"
                );
                assert_eq!(delivered.len(), sent.len());
            }
            // A port owned but not published is delivered as it is.
            let plain = segment(protocol, remote, 40000, host, 31081);
            let (verdict, delivered) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &plain);
            assert_eq!((verdict, delivered), (REDIRECT, plain));
        }
    }
}

#[test]
fn the_container_port_leaves_as_the_published_host_port() {
    let ebpf = translating_datapath();
    for (host, remote) in FAMILIES {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            // To the network and to the host's own services.
            for dst in [remote, host] {
                let reply = segment(protocol, host, C0_PORT, dst, 40000);
                let (verdict, sent) = run_out(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &reply);
                assert_eq!(verdict, REDIRECT, "{protocol} to {dst}");
                assert_eq!(ports_and_checksum(&sent), (C0_HOST_PORT, 40000, true));
            }
            // Another container's port is no way out, nor a port nobody publishes.
            for sport in [C1_PORT, 81] {
                let sent = segment(protocol, host, sport, remote, 40000);
                assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &sent), SHOT);
            }
        }
    }
    assert_eq!(counters(&ebpf, 0).tx_dropped_port_not_owned, 8);
}

/// What leaves translated on the short path would pass the full checks too: a reply
/// from the container port with another source MAC or address, or to a multicast
/// group, is dropped as the full checks drop it, untranslated.
#[test]
fn the_container_port_leaves_translated_only_where_the_full_checks_let_it() {
    let ebpf = translating_datapath();
    let out = |frame: &[u8]| run_out(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, frame);
    let families = [
        (
            IpAddr::V4(HOST_IPV4),
            IpAddr::V4(REMOTE_IPV4),
            IpAddr::V4(OTHER_IPV4),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
        ),
        (
            IpAddr::V6(HOST_IPV6),
            IpAddr::V6(REMOTE_IPV6),
            IpAddr::V6("2001:db8::99".parse().unwrap()),
            IpAddr::V6("ff02::fb".parse().unwrap()),
        ),
    ];
    for (host, remote, other, group) in families {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            let mut other_mac = segment(protocol, host, C0_PORT, remote, 40000);
            other_mac[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x66]);
            let other_source = segment(protocol, other, C0_PORT, remote, 40000);
            let to_group = segment(protocol, host, C0_PORT, group, 40000);
            for frame in [other_mac, other_source, to_group] {
                assert_eq!(out(&frame), (SHOT, frame.clone()), "{protocol}");
            }
            let reply = segment(protocol, host, C0_PORT, remote, 40000);
            let (verdict, sent) = out(&reply);
            assert_eq!(verdict, REDIRECT);
            assert_eq!(ports_and_checksum(&sent), (C0_HOST_PORT, 40000, true));
        }
    }
    let counted = counters(&ebpf, 0);
    assert_eq!(
        (
            counted.tx_packets,
            counted.tx_dropped_spoofed,
            counted.tx_dropped_multicast
        ),
        (4, 8, 4)
    );
}

/// `segment` (an IPv6 frame) with a destination options header of `len_words`
/// before its transport header; the transport checksum stays right (the pseudo-header
/// counts the transport message alone).
fn behind_destination_options(segment: &[u8], len_words: u8) -> Vec<u8> {
    let (src, dst) = (&segment[14 + 8..14 + 24], &segment[14 + 24..14 + 40]);
    let mut payload = ipv6_ext_header(segment[14 + 6], len_words);
    payload.extend_from_slice(&segment[14 + 40..]);
    v6(
        <[u8; 16]>::try_from(src).unwrap().into(),
        <[u8; 16]>::try_from(dst).unwrap().into(),
        60,
        &payload,
    )
}

/// The transport message after `len_words` of destination options, back in a plain
/// IPv6 frame: its ports and whether its checksum is right.
fn ports_and_checksum_behind(frame: &[u8], len_words: u8) -> (u16, u16, bool) {
    let l4 = 14 + 40 + 8 * (usize::from(len_words) + 1);
    let mut plain = frame[..14 + 40].to_vec();
    plain[14 + 6] = frame[14 + 40];
    plain.extend_from_slice(&frame[l4..]);
    ports_and_checksum(&plain)
}

/// Ports are rewritten in place where the headers lie in reach, and through the
/// kernel's helper past it (here: behind 600 bytes of IPv6 options), alike.
#[test]
fn ports_far_into_the_packet_are_translated_too() {
    let ebpf = translating_datapath();
    let (host, remote) = (IpAddr::V6(HOST_IPV6), IpAddr::V6(REMOTE_IPV6));
    for len_words in [0, 74] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            let inbound = segment(protocol, remote, 30020, host, C0_HOST_PORT);
            let inbound = behind_destination_options(&inbound, len_words);
            let (verdict, delivered) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &inbound);
            assert_eq!(verdict, REDIRECT, "{protocol} behind {len_words}");
            assert_eq!(
                ports_and_checksum_behind(&delivered, len_words),
                (30020, C0_PORT, true),
                "{protocol} behind {len_words}"
            );
            let reply = segment(protocol, host, C0_PORT, remote, 30020);
            let reply = behind_destination_options(&reply, len_words);
            let (verdict, sent) = run_out(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &reply);
            assert_eq!(verdict, REDIRECT, "{protocol} behind {len_words}");
            assert_eq!(
                ports_and_checksum_behind(&sent, len_words),
                (C0_HOST_PORT, 30020, true),
                "{protocol} behind {len_words}"
            );
        }
    }
}

#[test]
fn an_ipv4_udp_datagram_without_checksum_keeps_none() {
    let ebpf = translating_datapath();
    let unchecked = v4(
        REMOTE_IPV4,
        HOST_IPV4,
        IPPROTO_UDP,
        &udp_segment(40000, C0_HOST_PORT, 24),
    );
    let (verdict, delivered) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &unchecked);
    assert_eq!(verdict, REDIRECT);
    let (l4, _) = l4_sum(&delivered);
    assert_eq!(&delivered[l4 + 2..l4 + 4], &C0_PORT.to_be_bytes());
    assert_eq!(&delivered[l4 + 6..l4 + 8], &[0, 0], "still no checksum");
}

/// An ICMP error from `from` to `to` quoting `original` (an IP packet), checksum right.
fn icmp_error_frame(from: IpAddr, to: IpAddr, original: &[u8]) -> Vec<u8> {
    match (from, to) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            with_l4_checksum(v4(f, t, IPPROTO_ICMP, &icmp_error(3, 3, 0, original)))
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            with_l4_checksum(v6(f, t, IPPROTO_ICMPV6, &icmp_error(1, 4, 0, original)))
        }
        _ => unreachable!("one family"),
    }
}

/// The quoted ports of the ICMP error in `frame`, and whether its checksum is right.
fn quoted_ports(frame: &[u8]) -> (u16, u16, bool) {
    let (l4, sum) = l4_sum(frame);
    let quoted = l4
        + 8
        + if frame[12..14] == [0x86, 0xdd] {
            40
        } else {
            20
        };
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    (port(quoted), port(quoted + 2), sum == 0)
}

#[test]
fn icmp_errors_quote_the_ports_each_side_knows() {
    let ebpf = translating_datapath();
    for (host, remote) in FAMILIES {
        // The network answers a datagram the container sent from its port 80, which
        // left as 31080: the container gets the error about its port 80.
        let left = segment(IPPROTO_UDP, host, C0_HOST_PORT, remote, 53);
        let error = icmp_error_frame(remote, host, &left[14..]);
        let (verdict, delivered) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &error);
        assert_eq!(verdict, REDIRECT, "{remote}");
        assert_eq!(quoted_ports(&delivered), (C0_PORT, 53, true));
        // The container refuses a datagram that reached its port 80 (sent to 31080):
        // the network gets the error about 31080.
        let arrived = segment(IPPROTO_UDP, remote, 40000, host, C0_PORT);
        let error = icmp_error_frame(host, remote, &arrived[14..]);
        let (verdict, sent) = run_out(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &error);
        assert_eq!(verdict, REDIRECT, "{remote}");
        assert_eq!(quoted_ports(&sent), (40000, C0_HOST_PORT, true));
    }
}

#[test]
fn the_container_keeps_what_reaches_its_published_port_over_its_loopback() {
    // Delivered from the host's or another container's 127.0.0.1:31080, the packet
    // arrives at the container's lo for port 80: it stays there. Port 81 is
    // nobody's inside, so it goes out to the host side.
    let ebpf = translating_datapath();
    let localhost = IpAddr::V4(LOCALHOST4);
    for (port, verdict) in [(C0_PORT, PIPE), (81, REDIRECT)] {
        let frame = segment(IPPROTO_TCP, localhost, 40000, localhost, port);
        for program in container_lo_programs() {
            assert_eq!(run(&ebpf, program, &frame), verdict, "{program}: {port}");
        }
    }
}

#[test]
fn the_containers_own_connection_to_its_published_host_port_is_translated_both_ways() {
    // Container 0's client (port 30020, its own) asks for 31080 over its loopback;
    // its server listens on 80. A client asking for 80 directly keeps 80 both ways.
    let ebpf = translating_datapath();
    for (host, _) in FAMILIES {
        let localhost = if host.is_ipv4() {
            IpAddr::V4(LOCALHOST4)
        } else {
            IpAddr::V6(LOCALHOST6)
        };
        for address in [host, localhost] {
            for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
                for program in container_lo_programs() {
                    let what = format!("{program} {protocol} {address}");
                    let request = segment(protocol, address, 30020, address, C0_HOST_PORT);
                    let (verdict, request) = run_out(&ebpf, program, &request);
                    assert_eq!(verdict, PIPE, "{what}: stays inside");
                    assert_eq!(
                        ports_and_checksum(&request),
                        (30020, C0_PORT, true),
                        "{what}"
                    );
                    let reply = segment(protocol, address, C0_PORT, address, 30020);
                    let (verdict, reply) = run_out(&ebpf, program, &reply);
                    assert_eq!(verdict, PIPE, "{what}: the reply stays inside");
                    assert_eq!(
                        ports_and_checksum(&reply),
                        (C0_HOST_PORT, 30020, true),
                        "{what}: the reply comes from the port asked for"
                    );
                    // The same client port, now straight to 80: no translation.
                    let direct = segment(protocol, address, 30020, address, C0_PORT);
                    assert_eq!(run_out(&ebpf, program, &direct), (PIPE, direct.clone()));
                    let reply = segment(protocol, address, C0_PORT, address, 30020);
                    assert_eq!(
                        run_out(&ebpf, program, &reply),
                        (PIPE, reply.clone()),
                        "{what}: a direct conversation's reply keeps its port"
                    );
                }
            }
        }
    }
}

#[test]
fn hostile_frames_about_published_ports_change_nothing_they_should_not() {
    let ebpf = translating_datapath();
    // A UDP header cut after its ports, to the published host port: not deliverable,
    // left to the host stack (which drops it) untouched.
    let mut truncated = segment(
        IPPROTO_UDP,
        IpAddr::V4(REMOTE_IPV4),
        40000,
        IpAddr::V4(HOST_IPV4),
        C0_HOST_PORT,
    );
    truncated.truncate(14 + 20 + 4);
    truncated[14 + 2..14 + 4].copy_from_slice(&(24u16).to_be_bytes());
    let (verdict, out) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &truncated);
    assert_eq!((verdict, out), (PIPE, truncated));
    // A TCP header cut short from the container's inner port: dropped as malformed,
    // not translated.
    let mut short = segment(
        IPPROTO_TCP,
        IpAddr::V4(HOST_IPV4),
        C0_PORT,
        IpAddr::V4(REMOTE_IPV4),
        443,
    );
    short.truncate(14 + 20 + 12);
    short[14 + 2..14 + 4].copy_from_slice(&(32u16).to_be_bytes());
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &short), SHOT);
    // An ICMP error from the network quoting a packet from the host port that the
    // host's address did not send (another source): not the container's, untouched.
    let forged = segment(
        IPPROTO_UDP,
        IpAddr::V4(OTHER_IPV4),
        C0_HOST_PORT,
        IpAddr::V4(REMOTE_IPV4),
        53,
    );
    let error = icmp_error_frame(
        IpAddr::V4(REMOTE_IPV4),
        IpAddr::V4(HOST_IPV4),
        &forged[14..],
    );
    let (verdict, out) = run_out(&ebpf, PUBLIC_INGRESS_PROGRAM, &error);
    assert_eq!((verdict, out), (PIPE, error));
    // The container may not report errors about another container's inner port.
    let arrived = segment(
        IPPROTO_UDP,
        IpAddr::V4(REMOTE_IPV4),
        40000,
        IpAddr::V4(HOST_IPV4),
        C1_PORT,
    );
    let error = icmp_error_frame(
        IpAddr::V4(HOST_IPV4),
        IpAddr::V4(REMOTE_IPV4),
        &arrived[14..],
    );
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &error), SHOT);
}
