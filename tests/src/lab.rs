//! The namespace lab: `remote` ↔ veth ↔ `host`. `host` has a public interface named
//! `eth0` with 198.18.0.1/24 and 2001:db8::1/64 and a default route via `remote`; that is
//! where the agent runs. Names are unique per lab; everything is torn down on drop.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{
    netns::{ChildGuard, Netns},
    wait::wait_until,
};

pub const HOST_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const REMOTE_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const HOST_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const REMOTE_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Addresses of the optional `far` namespace, behind `remote` (see
/// [`Lab::add_far_network`]).
pub const FAR_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const FAR_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// Name of the public interface in `host` and of its peer in `remote`.
pub const PUBLIC_IFACE: &str = "eth0";

/// Prefix of every lab namespace and pin directory, followed by the test's pid.
const LAB_PREFIX: &str = "netiso-lab-";
const BPFFS: &str = "/sys/fs/bpf";

/// Transport protocol of a test server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A lab. Field order matters: namespaces drop (and vanish) before the pin directory.
pub struct Lab {
    pub id: String,
    pub host: Netns,
    pub remote: Netns,
    /// A network behind `remote`, made by [`Lab::add_far_network`].
    pub far: Option<Netns>,
    pin_root: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale_labs();
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let remote = Netns::create(&format!("{LAB_PREFIX}{id}-remote"));
        let host = Netns::create(&format!("{LAB_PREFIX}{id}-host"));
        add_veth_pair((PUBLIC_IFACE, &remote), (PUBLIC_IFACE, &host));
        for (ns, v4, v6) in [
            (&host, HOST_IPV4, HOST_IPV6),
            (&remote, REMOTE_IPV4, REMOTE_IPV6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", PUBLIC_IFACE]);
            // nodad: the address is usable at once instead of after duplicate detection.
            ns.ip(&[
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                PUBLIC_IFACE,
                "nodad",
            ]);
            ns.ip(&["link", "set", PUBLIC_IFACE, "up"]);
        }
        host.ip(&["route", "add", "default", "via", &REMOTE_IPV4.to_string()]);
        host.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &REMOTE_IPV6.to_string(),
        ]);
        let pin_root = PathBuf::from(BPFFS).join(format!("{LAB_PREFIX}{id}"));
        Self {
            id,
            host,
            remote,
            far: None,
            pin_root,
        }
    }

    /// Adds a namespace `far` (198.18.1.2, 2001:db8:1::2) routed through `remote`,
    /// whose link towards `far` has an MTU of `mtu`: packets bigger than that make
    /// `remote` send "fragmentation needed" / "packet too big" back to the host.
    pub fn add_far_network(&mut self, mtu: u32) -> &Netns {
        let far = Netns::create(&format!("{LAB_PREFIX}{}-far", self.id));
        add_veth_pair(("eth1", &self.remote), (PUBLIC_IFACE, &far));
        self.remote
            .ip(&["addr", "add", "198.18.1.1/24", "dev", "eth1"]);
        self.remote
            .ip(&["addr", "add", "2001:db8:1::1/64", "dev", "eth1", "nodad"]);
        self.remote
            .ip(&["link", "set", "eth1", "mtu", &mtu.to_string(), "up"]);
        far.ip(&[
            "addr",
            "add",
            &format!("{FAR_IPV4}/24"),
            "dev",
            PUBLIC_IFACE,
        ]);
        far.ip(&[
            "addr",
            "add",
            &format!("{FAR_IPV6}/64"),
            "dev",
            PUBLIC_IFACE,
            "nodad",
        ]);
        far.ip(&["link", "set", PUBLIC_IFACE, "up"]);
        far.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        far.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"]);
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            self.remote.exec(&["sysctl", "-qw", key]);
        }
        self.far.insert(far)
    }

    /// Pin directory for an agent running in this lab (created by the agent).
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// The control socket and state directory of this lab's agent, as flags:
    /// private to the lab, removed with it.
    /// A container id of this lab: the lab's prefix lets a later lab remove what a
    /// killed test left behind.
    pub fn container_id(&self, name: &str) -> String {
        format!("lab-{}-{name}", self.id)
    }

    /// A namespace as a container runtime makes one (for netiso to adopt); named
    /// apart from the agent's, removed on drop.
    pub fn runtime_netns(&self, name: &str) -> Netns {
        Netns::create(&format!("{}{name}", self.runtime_netns_prefix()))
    }

    pub fn runtime_netns_prefix(&self) -> String {
        format!("{LAB_PREFIX}{}-rt-", self.id)
    }

    /// A CNI container id (`CNI_CONTAINERID`) for this lab. The agent's id for an
    /// attachment starts with the first 12 letters and digits of it, and this prefix
    /// of them names the lab: see [`Lab::cni_namespace_prefix`].
    pub fn cni_container_id(&self, name: &str) -> String {
        format!("{}{name}", self.cni_id_prefix())
    }

    fn cni_id_prefix(&self) -> String {
        let (pid, counter) = self.id.split_once('-').expect("lab ids are PID-N");
        let number = |text: &str| text.parse::<u64>().expect("lab ids are numbers");
        format!("l{:x}{:x}x", number(pid), number(counter))
    }

    /// What the names of the namespaces of this lab's CNI attachments start with.
    pub fn cni_namespace_prefix(&self) -> String {
        let prefix: String = self.cni_id_prefix().chars().take(12).collect();
        format!("netiso-cni-{prefix}")
    }

    pub fn agent_paths(&self) -> Vec<String> {
        vec![
            "--api-socket".into(),
            self.api_socket().display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
        ]
    }

    pub fn api_socket(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{LAB_PREFIX}{}.sock", self.id))
    }

    pub fn state_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{LAB_PREFIX}{}-state", self.id))
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Containers an agent made in this lab (their namespaces carry its prefix; the
        // host and remote namespaces go with their own guards).
        let prefix = format!("{LAB_PREFIX}{}-", self.id);
        let cni_prefix = self.cni_namespace_prefix();
        if let Ok(entries) = fs::read_dir("/run/netns") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = (name.starts_with(&prefix) || name.starts_with(&cni_prefix))
                    && ![self.host.name(), self.remote.name()].contains(&name.as_str());
                if ours {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", &name])
                        .status();
                }
            }
        }
        let _ = fs::remove_dir_all(&self.pin_root);
        let _ = fs::remove_dir_all(self.state_dir());
        let _ = fs::remove_file(self.api_socket());
    }
}

/// Creates a veth pair with each end directly inside its namespace: nothing appears
/// in the root namespace, even for an instant.
pub fn add_veth_pair((a_name, a_ns): (&str, &Netns), (b_name, b_ns): (&str, &Netns)) {
    crate::netns::run_checked(std::process::Command::new("ip").args([
        "link",
        "add",
        "name",
        a_name,
        "netns",
        a_ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b_ns.name(),
    ]));
}

/// Removes namespaces and pin directories left by test processes that no longer run
/// (a test killed with SIGKILL cannot run its destructors).
fn remove_stale_labs() {
    let stale = |name: &str| {
        name.strip_prefix(LAB_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    for dir in ["/run/netns", BPFFS] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !stale(&name) {
                continue;
            }
            if dir == BPFFS {
                let _ = fs::remove_dir_all(entry.path());
            } else {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &name])
                    .status();
            }
        }
    }
}

/// Sends `count` UDP datagrams of `payload_len` bytes from `ns` to `dst`.
pub fn send_udp(ns: &Netns, dst: SocketAddr, count: usize, payload_len: usize) {
    ns.run(|| {
        let bind: SocketAddr = match dst.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind).expect("binding a UDP socket");
        let payload = vec![0x5a_u8; payload_len];
        for i in 0..count {
            socket
                .send_to(&payload, dst)
                .unwrap_or_else(|e| panic!("sending datagram {i} to {dst}: {e}"));
        }
    });
}

/// Whether a socket of `proto` is bound to local `port` in `ns` (listening, for TCP).
pub fn is_listening(ns: &Netns, proto: Proto, port: u16) -> bool {
    ns.run(|| {
        let files: &[&str] = match proto {
            Proto::Tcp => &["tcp", "tcp6"],
            Proto::Udp => &["udp", "udp6"],
        };
        files.iter().any(|file| {
            // thread-self: the namespace of this thread, not of the process.
            let table =
                fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
            table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields
                    .get(1)
                    .and_then(|addr| addr.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                // TCP state 0A is LISTEN; UDP sockets are ready once bound.
                local_port == Some(port) && (proto == Proto::Udp || fields.get(3) == Some(&"0A"))
            })
        })
    })
}

/// Waits until a server in `ns` is bound to `port`.
pub fn wait_for_listener(ns: &Netns, proto: Proto, port: u16) {
    wait_until(
        &format!("a {proto:?} listener on port {port} in {}", ns.name()),
        Duration::from_secs(10),
        || is_listening(ns, proto, port),
    );
}

/// Starts `nc` listening on `port` in `ns`; what it receives is on its stdout.
pub fn start_nc_server(ns: &Netns, proto: Proto, port: u16) -> ChildGuard {
    let port_text = port.to_string();
    let mut argv = vec!["nc", "-l", "-n"];
    if proto == Proto::Udp {
        argv.push("-u");
    }
    argv.push(&port_text);
    let server = ns.spawn(&argv);
    wait_for_listener(ns, proto, port);
    server
}

/// Starts `nc` listening for one TCP connection on `addr:port` in `ns`; what it
/// receives is on its stdout once the connection closes.
pub fn start_tcp_listener(ns: &Netns, addr: IpAddr, port: u16) -> ChildGuard {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let server = ns.spawn(&[
        "nc",
        family,
        "-l",
        "-n",
        &addr.to_string(),
        &port.to_string(),
    ]);
    wait_for_listener(ns, Proto::Tcp, port);
    server
}

/// Sends `text` over one TCP connection from `ns` to `dst`; whether it got through.
pub fn send_tcp(ns: &Netns, dst: SocketAddr, text: &str) -> bool {
    ns.command("sh")
        .args([
            "-c",
            &format!("printf '{text}' | nc -N -w 5 {} {}", dst.ip(), dst.port()),
        ])
        .status()
        .expect("running nc")
        .success()
}

/// Starts an `iperf3` server for one test on `port` in `ns`.
pub fn start_iperf3_server(ns: &Netns, port: u16) -> ChildGuard {
    let server = ns.spawn(&[
        "iperf3",
        "--server",
        "--one-off",
        "--port",
        &port.to_string(),
    ]);
    wait_for_listener(ns, Proto::Tcp, port);
    server
}

/// Sends raw Ethernet frames, exactly as given, out of `iface` in `ns` (a packet
/// socket: the kernel adds and checks nothing).
pub fn send_raw_frames(ns: &Netns, iface: &str, frames: &[Vec<u8>]) {
    send_raw(ns, iface, frames, false);
}

/// [`send_raw_frames`] past the interface's qdiscs (`PACKET_QDISC_BYPASS`), as a
/// container trying to dodge its egress limit would.
pub fn send_raw_frames_past_qdiscs(ns: &Netns, iface: &str, frames: &[Vec<u8>]) {
    send_raw(ns, iface, frames, true);
}

/// Packets `iface` of `ns` received so far (its link counter).
pub fn rx_packets(ns: &Netns, iface: &str) -> u64 {
    let table = ns.run(|| fs::read_to_string("/proc/thread-self/net/dev").expect("/proc/net/dev"));
    table
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix(&format!("{iface}:"))
                .map(str::to_owned)
        })
        .and_then(|counters| counters.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no counters for {iface}"))
}

fn send_raw(ns: &Netns, iface: &str, frames: &[Vec<u8>], bypass_qdiscs: bool) {
    let iface = std::ffi::CString::new(iface).expect("interface name");
    ns.run(|| {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            if bypass_qdiscs {
                const PACKET_QDISC_BYPASS: libc::c_int = 20;
                let on: libc::c_int = 1;
                let set = libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    PACKET_QDISC_BYPASS,
                    (&raw const on).cast(),
                    size_of::<libc::c_int>() as u32,
                );
                assert_eq!(
                    set,
                    0,
                    "PACKET_QDISC_BYPASS: {}",
                    std::io::Error::last_os_error()
                );
            }
            let ifindex = libc::if_nametoindex(iface.as_ptr());
            assert!(ifindex != 0, "no interface {iface:?}");
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_ifindex = ifindex as i32;
            address.sll_halen = 6;
            for frame in frames {
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const address).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "sending a raw frame: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}

/// The MAC address of `iface` in `ns`.
pub fn mac_of(ns: &Netns, iface: &str) -> [u8; 6] {
    let output = ns.exec(&["ip", "-o", "link", "show", "dev", iface]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let address = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC address in {text}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(address.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}
