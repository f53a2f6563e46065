//! The Debian package under a real systemd, in the VM that `cargo xtask vm-test
//! --systemd` boots (a Debian 12 root file system with systemd as PID 1): the
//! previous release's package installed and started as a service, podman serving a
//! published port through the netiso network, the newer package installed under
//! traffic (an upgrade of the pinned state in place), `systemctl restart` under
//! traffic, the unit's sandbox letting the agent do everything, and `dpkg --purge`
//! plus docs/operating.md's "Removing everything" leaving nothing (the inventory is printed).
//!
//! The VM is the host here: the agent runs in its root namespace on `pub0`, a veth
//! whose peer is in the namespace `remote`. Ignored elsewhere: it installs packages
//! and drives the machine's systemd.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

use netiso_tests::{
    agent::http_get,
    netns::Netns,
    podman::Podman,
    statistics::{StatisticsSnapshot, assert_no_counter_went_backwards},
    streams::{CheckedTcpStream, CountedUdpStream},
    wait::wait_until,
};

const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PUBLIC: &str = "pub0";
const API_SOCKET: &str = "/run/netiso/api.sock";
const HTTP: &str = "127.0.0.1:5051";
/// Emulation: the pace the senders keep there.
const UDP_PER_SECOND: u64 = 1000;
const TCP_BYTES_PER_SECOND: u64 = 1 << 20;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(name)
            .unwrap_or_else(|| panic!("{name} is not set: `cargo xtask vm-test --systemd`")),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `script` with sh: (success, stdout and stderr).
fn sh(script: &str) -> (bool, String) {
    let output: Output = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("running sh");
    (
        output.status.success(),
        text(&output.stdout) + &text(&output.stderr),
    )
}

/// Runs `script`, which must succeed; returns its output.
fn must(script: &str) -> String {
    let (ok, output) = sh(script);
    assert!(ok, "`{script}` failed:\n{output}\n{}", journal());
    output
}

/// The agent's journal.
fn journal() -> String {
    sh("journalctl -u netiso --no-pager -o short-monotonic").1
}

/// Waits until the service's agent answers on its control socket.
fn wait_until_serving() {
    wait_until("the agent to answer", Duration::from_secs(180), || {
        sh("systemctl is-active --quiet netiso && netiso container list").0
    });
}

/// The public interface and the outside: `pub0` in the VM's own namespace, its peer
/// kept here until the service has started (so that `/run/netns`, which `ip netns`
/// makes, does not exist before the service does, as on a fresh host).
fn public_interface() {
    must(&format!(
        "ip link add name {PUBLIC} type veth peer name peer0 && \
         ip addr add {HOST}/24 dev {PUBLIC} && \
         ip addr add 2001:db8::1/64 dev {PUBLIC} nodad && \
         ip link set {PUBLIC} up && ip link set peer0 up && \
         ip route add default via 198.18.0.2 dev {PUBLIC}"
    ));
}

fn the_remote() -> Netns {
    let remote = Netns::create("remote");
    must("ip link set peer0 netns remote");
    remote.ip(&["addr", "add", "198.18.0.2/24", "dev", "peer0"]);
    remote.ip(&["addr", "add", "2001:db8::2/64", "dev", "peer0", "nodad"]);
    remote.ip(&["link", "set", "peer0", "up"]);
    remote
}

/// The page the remote gets at the host's port, once it answers.
fn page(remote: &Netns, port: u16) -> String {
    let addr = SocketAddr::new(IpAddr::V4(HOST), port);
    wait_until(
        &format!("{addr} to answer"),
        Duration::from_secs(60),
        || {
            remote
                .run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
        },
    );
    http_get(remote, addr, "/").body.trim().to_owned()
}

/// docs/operating.md's "Removing everything", for this VM's public interface.
fn removing_everything(guide: &str) -> String {
    let section = guide
        .split("## Removing everything")
        .nth(1)
        .expect("docs/operating.md has a \"Removing everything\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block in it");
    block.replace("dev eth0", &format!("dev {PUBLIC}"))
}

/// What netiso could have left in the kernel and on disk, one line each, with
/// whether it is empty.
fn inventory() -> Vec<(String, String)> {
    [
        ("pins", "find /sys/fs/bpf/netiso 2>/dev/null"),
        ("namespaces", "ls /run/netns 2>/dev/null | grep '^netiso' || true"),
        ("links", "ip -o link show | grep -o 'netiso[^:@ ]*' || true"),
        (
            "filters",
            "for at in 'pub0 ingress' 'pub0 egress' 'lo ingress' 'lo egress'; do tc filter show dev $at | grep -i 'pref 28265' || true; done",
        ),
        ("tcx and other links", "bpftool link show"),
        (
            "programs",
            "bpftool prog show | grep -E 'public_|host_lo|container_|probe_' || true",
        ),
        (
            "files",
            "ls -d /var/lib/netiso /run/netiso/api.sock /usr/bin/netiso /opt/cni/bin/netiso /etc/default/netiso /lib/systemd/system/netiso.service 2>/dev/null || true",
        ),
        ("package", "dpkg-query -W -f '${Status}' netiso 2>/dev/null || true"),
    ]
    .into_iter()
    .map(|(what, script)| (what.to_owned(), sh(script).1.trim().to_owned()))
    .collect()
}

#[test]
#[ignore = "needs systemd as PID 1 and the packages: `cargo xtask vm-test --systemd` runs it"]
fn the_package_runs_under_systemd_upgrades_in_place_and_purges_to_nothing() {
    let previous_deb = env_path("NETISO_PACKAGE_PREVIOUS");
    let new_deb = env_path("NETISO_PACKAGE_NEW");
    let guide =
        std::fs::read_to_string(env_path("NETISO_OPERATING_GUIDE")).expect("docs/operating.md");
    let inventory_file = env_path("NETISO_INVENTORY");

    public_interface();
    must(&format!("dpkg -i {}", previous_deb.display()));
    assert_eq!(must("netiso --version").trim(), "netiso 0.1.0");
    // As an operator does: the flags in the package's /etc/default/netiso, then start.
    std::fs::write(
        "/etc/default/netiso",
        format!(
            "NETISO_AGENT_ARGS=\"--eth0-name {PUBLIC} --resources=ports:[31000-32000];ephemeral_ports:[30001-30999] --ephemeral_ports_per_container=16 --egress_rate_limit_per_container=1250000B --minimum_egress_rate_limit=0B\"\n"
        ),
    )
    .unwrap();
    must("systemctl enable --now netiso");
    wait_until_serving();
    assert_eq!(must("systemctl is-active netiso").trim(), "active");
    assert!(journal().contains("netiso agent ready"), "{}", journal());

    let remote = the_remote();
    must("ip netns attach vmhost 1");
    let host = Netns::existing("vmhost");
    let podman = Podman::new(
        &host,
        std::path::Path::new(API_SOCKET),
        std::path::Path::new("/opt/cni/bin/netiso"),
    );
    podman.serve("web", "31080:80", 80, "served-by-podman");
    assert_eq!(page(&remote, 31080), "served-by-podman");

    let created = must("netiso container create streams --ports 31000-31019");
    assert!(created.contains("\"streams\""), "{created}");
    let streams = Netns::existing("netiso-streams");
    let tcp = CheckedTcpStream::start(
        &remote,
        &streams,
        SocketAddr::new(IpAddr::V4(HOST), 31005),
        TCP_BYTES_PER_SECOND,
    );
    let udp = CountedUdpStream::start(
        &remote,
        &streams,
        SocketAddr::new(IpAddr::V4(HOST), 31015),
        UDP_PER_SECOND,
    );
    let flowing = |what: &str, tcp: &CheckedTcpStream, udp: &CountedUdpStream| {
        let (tcp_mark, udp_mark) = (tcp.received(), udp.received());
        wait_until(what, Duration::from_secs(60), || {
            tcp.received() > tcp_mark + 65536 && udp.received() > udp_mark + UDP_PER_SECOND / 2
        });
    };
    flowing("the streams to flow", &tcp, &udp);
    let http: SocketAddr = HTTP.parse().unwrap();
    let before = StatisticsSnapshot::take(&host, http);

    // The newer package: its postinst restarts the service, whose agent upgrades the
    // pinned state (layout 1 to the current one) under the traffic.
    must(&format!("dpkg -i {}", new_deb.display()));
    assert_eq!(must("netiso --version").trim(), "netiso 0.2.0");
    wait_until_serving();
    assert!(
        journal().contains(&format!(
            "pinned state upgraded in place from layout 1 to {}",
            netiso_common::LAYOUT_VERSION
        )),
        "{}",
        journal()
    );
    flowing("the streams to flow after the upgrade", &tcp, &udp);
    assert_eq!(page(&remote, 31080), "served-by-podman");

    must("systemctl restart netiso");
    wait_until_serving();
    flowing("the streams to flow after a restart", &tcp, &udp);
    assert_eq!(page(&remote, 31080), "served-by-podman");
    let tcp = tcp.finish();
    let udp = udp.finish();
    eprintln!("under systemd: TCP {tcp:?}; UDP {udp:?}");
    let sent = tcp.sent.expect("the TCP stream was never reset");
    assert_eq!(
        tcp.received,
        Ok(sent),
        "every byte of the TCP stream arrived"
    );
    assert_eq!(tcp.first_wrong_byte, None);
    assert!(udp.lost * 1000 <= udp.sent, "{udp:?}");
    assert_no_counter_went_backwards(&before, &StatisticsSnapshot::take(&host, http));

    // The sandbox let the agent do all of that: nothing was refused it.
    let log = journal();
    let refused: Vec<&str> = log
        .lines()
        .filter(|line| {
            let line = line.to_lowercase();
            ["denied", "not permitted", "read-only file system", "failed"]
                .iter()
                .any(|word| line.contains(word))
        })
        .collect();
    assert!(refused.is_empty(), "the agent was refused: {refused:#?}");

    podman.ok(&["rm", "-f", "-t", "0", "web"]);
    drop(podman);
    drop(streams);
    must(&format!("set -ex\n{}", removing_everything(&guide)));
    // Programs go when their last reference does.
    wait_until(
        "netiso's programs to be freed",
        Duration::from_secs(10),
        || {
            inventory()
                .iter()
                .all(|(what, found)| what != "programs" || found.is_empty())
        },
    );
    let found = inventory();
    let mut report = String::new();
    for (what, left) in &found {
        let shown = if left.is_empty() { "nothing" } else { left };
        let _ = writeln!(report, "{what}: {shown}");
    }
    std::fs::write(&inventory_file, &report).unwrap();
    for (what, left) in &found {
        assert!(left.is_empty(), "{what} left after removal:\n{report}");
    }
    drop(host);
    must("ip netns delete vmhost");
}
