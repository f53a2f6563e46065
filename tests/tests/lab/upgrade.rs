//! Upgrading in place: the agent of the previous release (netiso 0.1.0, whose pinned
//! state has layout 1; built from its commit by `cargo xtask previous-release`) runs
//! containers (and on the host a podman container with a published port) under
//! traffic, then this tree's agent takes over, after a clean stop and after a kill. And pinned state the agent cannot take (a newer layout, a
//! damaged record, a missing or misshapen map) is refused in one line, untouched.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData};
use netiso_common::{
    CONTAINER_SHAPING_MAP, ContainerShaping, LAYOUT_VERSION, LayoutState, PINNED_LAYOUT_MAP,
    PORT_OWNERS_MAP, PinnedLayout,
};
use netiso_tests::{
    agent::{Agent, agent_http, cli, run_binary, run_netiso},
    in_vm,
    lab::{HOST_IPV4, Lab, REMOTE_IPV4},
    netns::Netns,
    podman::Podman,
    statistics::{StatisticsSnapshot, assert_no_counter_went_backwards},
    streams::{CheckedTcpStream, CountedUdpStream},
    wait::wait_until,
};

use super::{
    lifecycle::reachable_from_remote,
    podman::page,
    rate_limits::{rate, timed_transfer_of},
};

/// The previous release's agent, as `cargo xtask test` builds it.
fn previous_release() -> PathBuf {
    let path = std::env::var_os("NETISO_PREVIOUS_BIN").map(PathBuf::from).expect(
        "NETISO_PREVIOUS_BIN is not set: run the tests with `cargo xtask test`, or set it to the path `cargo xtask previous-release` prints",
    );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// Egress limit of every container: 10 Mbit/s.
const EGRESS_LIMIT: u64 = 1_250_000;

fn agent_flags() -> [String; 2] {
    [
        format!("--egress_rate_limit_per_container={EGRESS_LIMIT}B"),
        "--minimum_egress_rate_limit=0B".to_owned(),
    ]
}

/// The containers of the upgrade: one receives a TCP stream, one a UDP stream, one
/// is idle (and is updated afterwards).
const CONTAINERS: [(&str, &str, u16); 3] = [
    ("stream", "31000-31099", 31010),
    ("feed", "31100-31199", 31110),
    ("idle", "31200-31299", 31210),
];

#[derive(Clone, Copy, Debug)]
enum OldAgentEnd {
    /// SIGTERM, as a package upgrade stops the service.
    Stopped,
    /// SIGKILL in the middle of the traffic.
    Killed,
}

/// Creates the lab's container `name` with `ports` through the previous release's
/// CLI (as its operators did); its namespace.
fn create_with_previous(lab: &Lab, previous: &Path, name: &str, ports: &str) -> Netns {
    let id = lab.container_id(name);
    let socket = lab.api_socket().display().to_string();
    let (ok, _, stderr) = run_binary(
        &lab.host,
        previous,
        &[
            "container",
            "create",
            &id,
            "--ports",
            ports,
            "--api-socket",
            &socket,
        ],
    );
    assert!(ok, "the previous release creating {id}: {stderr}");
    Netns::existing(&format!("netiso-{id}"))
}

fn upgrade_under_traffic(end: OldAgentEnd) {
    let lab = Lab::new();
    let previous = previous_release();
    let flags = agent_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let old_agent = Agent::start_binary(&lab, &previous, &flags);
    let [stream, feed, _idle] =
        CONTAINERS.map(|(name, ports, _)| create_with_previous(&lab, &previous, name, ports));
    // A podman container on the netiso network (the previous release is its CNI
    // plugin), publishing port 80 inside as 31400 (the host's podman: not in the VM).
    let podman = (!in_vm()).then(|| {
        let podman = Podman::new(&lab.host, &lab.api_socket(), &previous);
        podman.serve("web", "31400:80", 80, "served-by-podman");
        assert_eq!(page(&lab, IpAddr::V4(HOST_IPV4), 31400), "served-by-podman");
        podman
    });
    // Slower under emulation, where the sender's own pace is the limit.
    let (tcp_rate, udp_rate) = if in_vm() {
        (1 << 20, 1000)
    } else {
        (4 << 20, 10_000)
    };
    let tcp = CheckedTcpStream::start(
        &lab.remote,
        &stream,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), CONTAINERS[0].2),
        tcp_rate,
    );
    let udp = CountedUdpStream::start(
        &lab.remote,
        &feed,
        SocketAddr::new(IpAddr::V4(HOST_IPV4), CONTAINERS[1].2),
        udp_rate,
    );
    wait_until("both streams to flow", Duration::from_secs(20), || {
        tcp.received() > 0 && udp.received() > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let before = StatisticsSnapshot::take(&lab.host, agent_http());
    match end {
        OldAgentEnd::Stopped => assert!(old_agent.stop(), "the previous release stopped"),
        OldAgentEnd::Killed => old_agent.kill(),
    }
    let started = Instant::now();
    let agent = Agent::start(&lab, &flags);
    let ready_after = started.elapsed();
    let (upgraded, log) = agent.wait_for_log(&format!(
        "pinned state upgraded in place from layout 1 to {LAYOUT_VERSION}"
    ));
    assert!(upgraded, "the agent's log:\n{log}");
    eprintln!("{}", log.lines().last().unwrap_or_default());
    let (tcp_mark, udp_mark) = (tcp.received(), udp.received());
    wait_until(
        "both streams to flow through the new programs",
        Duration::from_secs(30),
        || tcp.received() > tcp_mark + 65536 && udp.received() > udp_mark + udp_rate / 2,
    );
    let tcp = tcp.finish();
    let udp = udp.finish();
    eprintln!(
        "upgrade after the previous agent was {end:?}: TCP sent {:?}, received {:?}; UDP {} of {} datagrams received, {} lost ({:.4}%); the new agent was ready {ready_after:?} after its start",
        tcp.sent,
        tcp.received,
        udp.received,
        udp.sent,
        udp.lost,
        udp.lost as f64 * 100.0 / udp.sent.max(1) as f64
    );
    let sent = tcp.sent.expect("the TCP stream was never reset");
    assert_eq!(
        tcp.received,
        Ok(sent),
        "every byte of the TCP stream arrived"
    );
    assert_eq!(tcp.first_wrong_byte, None, "and each was the byte sent");
    assert!(
        udp.lost * 1000 <= udp.sent,
        "at most 0.1% of the UDP datagrams lost: {udp:?}"
    );
    assert_no_counter_went_backwards(&before, &StatisticsSnapshot::take(&lab.host, agent_http()));
    if let Some(podman) = podman {
        assert_eq!(page(&lab, IpAddr::V4(HOST_IPV4), 31400), "served-by-podman");
        podman.ok(&["rm", "-f", "-t", "0", "web"]);
    }
    after_the_upgrade(&lab);
}

/// `netiso container VERB ID --ports PORTS` for the lab's container `name`, which
/// must succeed; its namespace.
fn with_ports(lab: &Lab, verb: &str, name: &str, ports: &str) -> Netns {
    let id = lab.container_id(name);
    let (ok, _, stderr) = cli(lab, &["container", verb, &id, "--ports", ports]);
    assert!(ok, "{verb} {id} after the upgrade: {stderr}");
    Netns::existing(&format!("netiso-{id}"))
}

/// Everything an operator does with containers works on the upgraded agent: list,
/// update, the rate limits, a new container, destroys; and the pinned state is
/// layout 2, with nothing of the upgrade left.
fn after_the_upgrade(lab: &Lab) {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for (name, ..) in CONTAINERS {
        assert!(
            listed.contains(&lab.container_id(name).as_str()),
            "{listed:?}"
        );
    }
    let idle_ns = with_ports(lab, "update", "idle", "31200-31249");
    assert!(reachable_from_remote(lab, &idle_ns, 31249));
    assert!(!reachable_from_remote(lab, &idle_ns, 31250));
    // 10 Mbit/s: 5 MB take 4 s; unlimited, a small fraction of that.
    assert_eq!(rate(&idle_ns, "eth0"), Some(EGRESS_LIMIT));
    let took = timed_transfer_of(&idle_ns, &lab.remote, (REMOTE_IPV4, 9000).into(), 5_000_000);
    assert!(
        took > Duration::from_millis(2500),
        "5 MB under a 10 Mbit/s limit took {took:?}"
    );
    let late_ns = with_ports(lab, "create", "late", "31300-31309");
    assert!(reachable_from_remote(lab, &late_ns, 31300));
    drop((idle_ns, late_ns));
    for name in ["stream", "feed", "idle", "late"] {
        let id = lab.container_id(name);
        let (ok, _, stderr) = cli(lab, &["container", "destroy", &id]);
        assert!(ok, "destroying {id}: {stderr}");
    }
    let record = read_layout_record(lab.pin_root());
    assert_eq!(record, PinnedLayout::new(LayoutState::Ready));
    assert!(!lab.pin_root().join("upgrading").exists());
}

#[test]
fn the_previous_release_is_upgraded_in_place_under_traffic() {
    upgrade_under_traffic(OldAgentEnd::Stopped);
}

#[test]
fn the_previous_release_killed_mid_traffic_is_upgraded_in_place() {
    upgrade_under_traffic(OldAgentEnd::Killed);
}

fn open_layout_record(root: &Path) -> Array<MapData, PinnedLayout> {
    let data = MapData::from_pin(root.join(PINNED_LAYOUT_MAP)).expect("opening the record");
    Array::try_from(Map::from_map_data(data).unwrap()).expect("the record's shape")
}

fn read_layout_record(root: &Path) -> PinnedLayout {
    open_layout_record(root)
        .get(&0, 0)
        .expect("reading the record")
}

fn write_layout_record(root: &Path, record: PinnedLayout) {
    open_layout_record(root)
        .set(0, record, 0)
        .expect("writing the record");
}

/// What the kernel holds for the lab: every pin under the root with its map's id,
/// and every tc attachment in the host namespace with its program.
fn kernel_state(lab: &Lab) -> (Vec<(String, Option<u32>)>, String) {
    let mut pins = Vec::new();
    let mut dirs = vec![lab.pin_root().to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let id = MapData::from_pin(&path)
                .and_then(|m| m.info())
                .ok()
                .map(|i| i.id());
            pins.push((path.display().to_string(), id));
        }
    }
    pins.sort();
    let attachments = lab.host.exec(&["bpftool", "-j", "net", "show"]);
    (
        pins,
        String::from_utf8_lossy(&attachments.stdout).into_owned(),
    )
}

/// A way to spoil the pinned state, the refusal it must meet, and how to put it back.
struct Spoiled {
    what: &'static str,
    refusal: String,
    spoil: Box<dyn Fn(&Path)>,
    restore: Box<dyn Fn(&Path)>,
}

fn set_aside(root: &Path, name: &str) {
    std::fs::rename(root.join(name), root.join(format!("{name}_SET_ASIDE"))).unwrap();
}

fn put_back(root: &Path, name: &str) {
    let _ = std::fs::remove_file(root.join(name));
    std::fs::rename(root.join(format!("{name}_SET_ASIDE")), root.join(name)).unwrap();
}

fn spoiled_states() -> Vec<Spoiled> {
    let good = PinnedLayout::new(LayoutState::Ready);
    vec![
        Spoiled {
            what: "a layout from the future",
            refusal: format!(
                "has layout {}, newer than this netiso's layout {LAYOUT_VERSION}",
                LAYOUT_VERSION + 1
            ),
            spoil: Box::new(|root| {
                let mut record = PinnedLayout::new(LayoutState::Ready);
                record.version = LAYOUT_VERSION + 1;
                write_layout_record(root, record);
            }),
            restore: Box::new(move |root| write_layout_record(root, good)),
        },
        Spoiled {
            what: "a corrupted record",
            refusal: "is not one netiso wrote (its magic is wrong)".to_owned(),
            spoil: Box::new(|root| {
                let mut record = PinnedLayout::new(LayoutState::Ready);
                record.magic = *b"garbage!";
                write_layout_record(root, record);
            }),
            restore: Box::new(move |root| write_layout_record(root, good)),
        },
        Spoiled {
            what: "a truncated record",
            refusal: format!(
                "{PINNED_LAYOUT_MAP} is a map of type Array with 4-byte keys, 4-byte values"
            ),
            spoil: Box::new(|root| {
                set_aside(root, PINNED_LAYOUT_MAP);
                let short = Array::<MapData, u32>::create(1, 0).unwrap();
                short.pin(root.join(PINNED_LAYOUT_MAP)).unwrap();
            }),
            restore: Box::new(|root| put_back(root, PINNED_LAYOUT_MAP)),
        },
        Spoiled {
            what: "a missing map",
            refusal: format!("lacks its map {PORT_OWNERS_MAP}"),
            spoil: Box::new(|root| set_aside(root, PORT_OWNERS_MAP)),
            restore: Box::new(|root| put_back(root, PORT_OWNERS_MAP)),
        },
        Spoiled {
            what: "a map of the right name and the wrong type",
            refusal: format!("{CONTAINER_SHAPING_MAP} is a map of type Hash"),
            spoil: Box::new(|root| {
                set_aside(root, CONTAINER_SHAPING_MAP);
                let hash = HashMap::<MapData, u32, ContainerShaping>::create(4096, 0).unwrap();
                hash.pin(root.join(CONTAINER_SHAPING_MAP)).unwrap();
            }),
            restore: Box::new(|root| put_back(root, CONTAINER_SHAPING_MAP)),
        },
    ]
}

#[test]
fn pinned_state_the_agent_cannot_take_is_refused_in_one_line_and_left_as_it_was() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let kept = lab.container_id("kept");
    assert!(
        cli(
            &lab,
            &["container", "create", &kept, "--ports", "31000-31009"]
        )
        .0
    );
    assert!(agent.stop());
    let args = Agent::lab_args(&lab, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = lab.pin_root();
    for spoiled in spoiled_states() {
        (spoiled.spoil)(root);
        let before = kernel_state(&lab);
        let (ok, _, stderr) = run_netiso(&lab.host, &args);
        assert!(!ok, "{}: the agent started:\n{stderr}", spoiled.what);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("netiso: error"))
            .collect();
        assert_eq!(errors.len(), 1, "{}: one line:\n{stderr}", spoiled.what);
        assert!(
            errors[0].contains(&spoiled.refusal),
            "{}: {:?} should say {:?}",
            spoiled.what,
            errors[0],
            spoiled.refusal
        );
        assert_eq!(
            kernel_state(&lab),
            before,
            "{}: nothing changed",
            spoiled.what
        );
        (spoiled.restore)(root);
    }
    // Put back, the state is taken as it was: the container is there and served.
    let _agent = Agent::start(&lab, &[]);
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(list[0]["id"], kept.as_str());
    let kept_ns = Netns::existing(&format!("netiso-{kept}"));
    assert!(reachable_from_remote(&lab, &kept_ns, 31005));
}

#[test]
fn an_upgrade_killed_at_any_step_is_completed_by_the_next_agent_under_traffic() {
    if netiso_tests::skipped_in_vm("the upgrade's steps are the agent's, on every kernel") {
        return;
    }
    let previous = previous_release();
    for point in netiso::failpoints::UPGRADE {
        let lab = Lab::new();
        let old_agent = Agent::start_binary(&lab, &previous, &[]);
        let id = lab.container_id("stream");
        let container = create_with_previous(&lab, &previous, "stream", "31000-31099");
        let tcp = CheckedTcpStream::start(
            &lab.remote,
            &container,
            SocketAddr::new(IpAddr::V4(HOST_IPV4), 31010),
            4 << 20,
        );
        let udp = CountedUdpStream::start(
            &lab.remote,
            &container,
            SocketAddr::new(IpAddr::V4(HOST_IPV4), 31020),
            10_000,
        );
        wait_until("both streams to flow", Duration::from_secs(20), || {
            tcp.received() > 0 && udp.received() > 0
        });
        let before = StatisticsSnapshot::take(&lab.host, agent_http());
        assert!(old_agent.stop());
        // The agent that upgrades is killed at `point`.
        let args = Agent::lab_args(&lab, &[]);
        let killed = lab
            .host
            .command(netiso_tests::agent::netiso_bin())
            .args(&args)
            .env("NETISO_FAILPOINTS", format!("{point}=crash"))
            .env("RUST_LOG", "info")
            .output()
            .expect("running the agent");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&killed.status),
            Some(9),
            "{point}: the agent was to be killed there:\n{}",
            String::from_utf8_lossy(&killed.stderr)
        );
        let agent = Agent::start(&lab, &[]);
        let completed = match *point {
            "upgrade.swapped" => "completing an upgrade".to_owned(),
            _ => format!("pinned state upgraded in place from layout 1 to {LAYOUT_VERSION}"),
        };
        let (found, log) = agent.wait_for_log(&completed);
        assert!(found, "{point}: the next agent's log:\n{log}");
        let (tcp_mark, udp_mark) = (tcp.received(), udp.received());
        wait_until(
            &format!("{point}: both streams to flow again"),
            Duration::from_secs(30),
            || tcp.received() > tcp_mark + 65536 && udp.received() > udp_mark + 5000,
        );
        let tcp = tcp.finish();
        let udp = udp.finish();
        eprintln!("killed at {point}: TCP {tcp:?}; UDP {udp:?}");
        let sent = tcp.sent.expect("the TCP stream was never reset");
        assert_eq!(tcp.received, Ok(sent), "{point}: every byte arrived");
        assert_eq!(tcp.first_wrong_byte, None);
        assert!(udp.lost * 1000 <= udp.sent, "{point}: {udp:?}");
        assert_no_counter_went_backwards(
            &before,
            &StatisticsSnapshot::take(&lab.host, agent_http()),
        );
        assert_eq!(
            read_layout_record(lab.pin_root()),
            PinnedLayout::new(LayoutState::Ready)
        );
        assert!(!lab.pin_root().join("upgrading").exists(), "{point}");
        drop(container);
        assert!(cli(&lab, &["container", "destroy", &id]).0);
    }
}

#[test]
fn layout_2_state_of_a_main_build_is_upgraded_in_place_to_3() {
    // Builds of main before 0.2.0 pinned layout 2: layout 3 without its loopback
    // translation table. Such state is made here from this agent's own, then taken
    // over by a new agent, which must upgrade it and keep the container serving.
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let id = lab.container_id("web");
    let (ok, _, stderr) = cli(
        &lab,
        &["container", "create", &id, "--ports", "31000-31099"],
    );
    assert!(ok, "{stderr}");
    assert!(agent.stop());
    let root = lab.pin_root();
    std::fs::remove_file(root.join(netiso_common::LOOPBACK_TRANSLATIONS_MAP))
        .expect("unpinning the table layout 3 added");
    let mut record = PinnedLayout::new(LayoutState::Ready);
    record.version = 2;
    write_layout_record(root, record);
    let agent = Agent::start(&lab, &[]);
    let (upgraded, log) = agent.wait_for_log(&format!(
        "pinned state upgraded in place from layout 2 to {LAYOUT_VERSION}"
    ));
    assert!(upgraded, "the agent's log:\n{log}");
    assert_eq!(read_layout_record(root).version, LAYOUT_VERSION);
    assert!(root.join(netiso_common::LOOPBACK_TRANSLATIONS_MAP).exists());
    let container = Netns::existing(&format!("netiso-{id}"));
    assert!(
        reachable_from_remote(&lab, &container, 31010),
        "the container serves after the upgrade"
    );
}
