//! Mesos's loopback semantics, ported from its tests 1-4 (ContainerToContainer and
//! HostToContainer, TCP and UDP), for IPv4 and IPv6: `localhost:P` and `hostIP:P`, from
//! the host or from another container, reach the owner of P. Container 1 owns
//! 31000-31499 and listens on 31001 at both addresses and on 32502, a port nobody
//! owns; the host also listens on 32502. Every message must land at its port's owner
//! and nowhere else.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use netiso_tests::{
    isolation::IsolationLab,
    lab::{HOST_IPV4, HOST_IPV6, send_tcp, start_tcp_listener},
    netns::{ChildGuard, Netns},
};

const VALID_PORT: u16 = 31001;
const INVALID_PORT: u16 = 32502;

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn localhost(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    fn host_ip(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(HOST_IPV4),
            Family::V6 => IpAddr::V6(HOST_IPV6),
        }
    }
}

#[derive(Clone, Copy)]
enum From {
    OtherContainer,
    Host,
}

fn lab() -> IsolationLab {
    let mut lab = IsolationLab::new();
    lab.add_container("c1", "30016-30031", "31000-31499");
    lab.add_container("c2", "30032-30047", "31500-32000");
    lab
}

fn sender(lab: &IsolationLab, from: From) -> &Netns {
    match from {
        From::OtherContainer => &lab.container(1).netns,
        From::Host => &lab.lab.host,
    }
}

fn tcp_send(ns: &Netns, dst: SocketAddr, text: &str) {
    assert!(
        send_tcp(ns, dst, text),
        "sending {text} to {dst} from {}",
        ns.name()
    );
}

fn output(server: ChildGuard) -> String {
    String::from_utf8_lossy(&server.wait_with_output().stdout).into_owned()
}

fn tcp_case(family: Family, from: From) {
    let lab = lab();
    let c1 = &lab.container(0).netns;
    let via_loopback = start_tcp_listener(c1, family.localhost(), VALID_PORT);
    let via_public = start_tcp_listener(c1, family.host_ip(), VALID_PORT);
    let c1_unowned = start_tcp_listener(c1, family.localhost(), INVALID_PORT);
    let host_loopback = start_tcp_listener(&lab.lab.host, family.localhost(), INVALID_PORT);
    let host_public = start_tcp_listener(&lab.lab.host, family.host_ip(), INVALID_PORT);
    let ns = sender(&lab, from);
    tcp_send(
        ns,
        SocketAddr::new(family.localhost(), VALID_PORT),
        "hello1",
    );
    tcp_send(
        ns,
        SocketAddr::new(family.localhost(), INVALID_PORT),
        "hello2",
    );
    tcp_send(ns, SocketAddr::new(family.host_ip(), VALID_PORT), "hello3");
    tcp_send(
        ns,
        SocketAddr::new(family.host_ip(), INVALID_PORT),
        "hello4",
    );
    assert_eq!(output(via_loopback), "hello1");
    assert_eq!(output(host_loopback), "hello2");
    assert_eq!(output(via_public), "hello3");
    assert_eq!(output(host_public), "hello4");
    // Container 1's listener on a port it does not own got no connection: nc is still
    // waiting for one.
    let mut c1_unowned = c1_unowned;
    assert!(
        c1_unowned.child_mut().try_wait().unwrap().is_none(),
        "container 1's listener on {INVALID_PORT} must not have been reached"
    );
}

fn udp_socket(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    let socket = ns.run(|| UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}")));
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

fn udp_send(ns: &Netns, dst: SocketAddr, text: &str) {
    ns.run(|| {
        let any: IpAddr = if dst.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).expect("binding a sender");
        socket.send_to(text.as_bytes(), dst).expect("sending");
    });
}

fn recv_text(socket: &UdpSocket) -> String {
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("a datagram within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn udp_case(family: Family, from: From) {
    let lab = lab();
    let c1 = &lab.container(0).netns;
    let any = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let via_loopback = udp_socket(c1, SocketAddr::new(family.localhost(), VALID_PORT));
    let via_public = udp_socket(c1, SocketAddr::new(family.host_ip(), VALID_PORT));
    let c1_unowned = udp_socket(c1, SocketAddr::new(any, INVALID_PORT));
    let host_unowned = udp_socket(&lab.lab.host, SocketAddr::new(any, INVALID_PORT));
    let ns = sender(&lab, from);
    udp_send(
        ns,
        SocketAddr::new(family.localhost(), VALID_PORT),
        "hello1",
    );
    udp_send(
        ns,
        SocketAddr::new(family.localhost(), INVALID_PORT),
        "hello2",
    );
    udp_send(ns, SocketAddr::new(family.host_ip(), VALID_PORT), "hello3");
    udp_send(
        ns,
        SocketAddr::new(family.host_ip(), INVALID_PORT),
        "hello4",
    );
    assert_eq!(recv_text(&via_loopback), "hello1");
    assert_eq!(recv_text(&via_public), "hello3");
    // Both datagrams to the unowned port reached the host, so neither reached
    // container 1 (a datagram is delivered once).
    let mut at_host = [recv_text(&host_unowned), recv_text(&host_unowned)];
    at_host.sort();
    assert_eq!(at_host, ["hello2", "hello4"]);
    c1_unowned.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        c1_unowned.recv(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "container 1 must not receive datagrams for {INVALID_PORT}"
    );
}

#[test]
fn container_to_container_tcp_ipv4() {
    tcp_case(Family::V4, From::OtherContainer);
}

#[test]
fn container_to_container_tcp_ipv6() {
    tcp_case(Family::V6, From::OtherContainer);
}

#[test]
fn container_to_container_udp_ipv4() {
    udp_case(Family::V4, From::OtherContainer);
}

#[test]
fn container_to_container_udp_ipv6() {
    udp_case(Family::V6, From::OtherContainer);
}

#[test]
fn host_to_container_tcp_ipv4() {
    tcp_case(Family::V4, From::Host);
}

#[test]
fn host_to_container_tcp_ipv6() {
    tcp_case(Family::V6, From::Host);
}

#[test]
fn host_to_container_udp_ipv4() {
    udp_case(Family::V4, From::Host);
}

#[test]
fn host_to_container_udp_ipv6() {
    udp_case(Family::V6, From::Host);
}

/// Bytes in each large datagram: more than the public MTU, which the kernel sends
/// whole over a loopback and in fragments to the network.
const LARGE_DATAGRAM: usize = 4000;
/// Bytes in each stream: many segments of the loopback's MSS.
const STREAM_BYTES: usize = 1 << 20;

/// Receives one datagram of at most 64 KiB on `socket`, within 10 s (`what` it is
/// says which was lost, if one is).
fn recv_len(socket: &UdpSocket, what: &str) -> usize {
    let mut buf = vec![0u8; 65536];
    socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("{what} did not arrive within 10 s: {e}"))
}

/// Sends `STREAM_BYTES` from `from` to a listener of `to` on `addr`; returns the bytes
/// the listener read and the sender's MSS.
fn stream(from: &Netns, to: &Netns, addr: SocketAddr) -> (usize, u32) {
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let listener = to.run(|| {
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}"))
    });
    let (done, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        let _ = done.send(bytes.len());
    });
    let mss = from.run(|| {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(&vec![7u8; STREAM_BYTES])
            .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
        let mut mss: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: a connected socket, an out-parameter of the size given.
        let got = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MAXSEG,
                (&raw mut mss).cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0, "reading the MSS");
        mss
    });
    let bytes = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the stream to {addr} did not end within 30 s"));
    (bytes, mss)
}

/// Packets longer than the public MTU: between containers through the host's address
/// and from the host through its loopback they cross whole (a large datagram, a
/// stream at the loopback's MSS); to the network they leave within the public MTU
/// (the datagram in fragments, the stream at the public MTU's MSS).
fn large_packets_case(family: Family) {
    let lab = lab();
    let (c1, c2) = (&lab.container(0).netns, &lab.container(1).netns);
    let remote = &lab.lab.remote;
    let datagram = vec![5u8; LARGE_DATAGRAM];
    for (sender, dst) in [
        (c2, SocketAddr::new(family.host_ip(), VALID_PORT)),
        (
            &lab.lab.host,
            SocketAddr::new(family.localhost(), VALID_PORT),
        ),
        (&lab.lab.host, SocketAddr::new(family.host_ip(), VALID_PORT)),
    ] {
        let receiver = udp_socket(c1, dst);
        sender.run(|| {
            let any = SocketAddr::new(
                match family {
                    Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
                    Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
                },
                0,
            );
            let socket = UdpSocket::bind(any).expect("binding a sender");
            socket.send_to(&datagram, dst).expect("sending");
        });
        let what = format!(
            "a {LARGE_DATAGRAM}-byte datagram from {} to {dst}",
            sender.name()
        );
        assert_eq!(recv_len(&receiver, &what), LARGE_DATAGRAM, "{what}");
    }
    let (bytes, mss) = stream(c2, c1, SocketAddr::new(family.host_ip(), VALID_PORT + 1));
    assert_eq!(bytes, STREAM_BYTES, "container to container, MSS {mss}");
    assert!(
        mss > 1500,
        "the stream went at the loopback's MSS, not {mss}"
    );
    let remote_ip = match family {
        Family::V4 => IpAddr::V4(netiso_tests::lab::REMOTE_IPV4),
        Family::V6 => IpAddr::V6(netiso_tests::lab::REMOTE_IPV6),
    };
    let at_remote = udp_socket(remote, SocketAddr::new(remote_ip, 7000));
    c1.run(|| {
        let socket = UdpSocket::bind(SocketAddr::new(family.host_ip(), VALID_PORT + 2))
            .expect("binding an owned port");
        socket
            .send_to(&datagram, SocketAddr::new(remote_ip, 7000))
            .expect("sending to the remote");
    });
    let what = "a datagram in fragments to the remote";
    assert_eq!(recv_len(&at_remote, what), LARGE_DATAGRAM, "{what}");
    let (bytes, mss) = stream(c1, remote, SocketAddr::new(remote_ip, 7001));
    assert_eq!(bytes, STREAM_BYTES, "container to the remote, MSS {mss}");
    assert!(
        mss <= 1460,
        "the stream to the remote kept to the public MTU, not {mss}"
    );
}

#[test]
fn large_packets_cross_whole_locally_and_within_the_mtu_to_the_network_ipv4() {
    large_packets_case(Family::V4);
}

#[test]
fn large_packets_cross_whole_locally_and_within_the_mtu_to_the_network_ipv6() {
    large_packets_case(Family::V6);
}
