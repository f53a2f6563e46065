//! podman 4.3 from Debian as a real CNI client: `podman run --network netiso -p …`
//! against a lab agent, with everything of podman's private to the test (its
//! configuration through `CONTAINERS_CONF`, storage, run and temporary directories,
//! the network configuration directory and the plugin directory) and an image
//! imported from a busybox-static root file system, so no registry is involved. podman
//! runs in the lab's host namespace, as it would on a host; it calls the netiso plugin
//! there, which asks the lab's agent.
use std::{fs, net::SocketAddr, time::Duration};

pub(super) use netiso_tests::podman::{busybox_rootfs, text};
use netiso_tests::{
    agent::{Agent, api_request, cli, http_get, netiso_bin},
    lab::{HOST_IPV4, HOST_IPV6, Lab, send_udp},
    leaks::assert_holds_only_live_containers,
    podman::{IMAGE, Podman},
    wait::wait_until,
};
use serde_json::{Value, json};

/// The page the remote gets at the host's `address` and `port`, once it answers.
pub(super) fn page(lab: &Lab, address: std::net::IpAddr, port: u16) -> String {
    let addr = SocketAddr::new(address, port);
    wait_until(&format!("{addr} answers"), Duration::from_secs(20), || {
        lab.remote
            .run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
    });
    http_get(&lab.remote, addr, "/").body.trim().to_owned()
}

pub(super) fn attachments(lab: &Lab) -> Vec<Value> {
    let (ok, list, stderr) = cli(lab, &["container", "list"]);
    assert!(ok, "{stderr}");
    list.as_array().cloned().unwrap_or_default()
}

#[test]
fn podman_containers_with_published_ports_serve_the_remote_and_leave_nothing() {
    if netiso_tests::skipped_in_vm(
        "podman is the host's; the datapath parts run in the VM elsewhere",
    ) {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let podman = Podman::new(&lab.host, &lab.api_socket(), &netiso_bin());
    // One translated port, one published as itself.
    podman.serve("web1", "31080:80", 80, "web-one");
    podman.serve("web2", "31090:31090", 31090, "web-two");
    let v4 = std::net::IpAddr::V4(HOST_IPV4);
    let v6 = std::net::IpAddr::V6(HOST_IPV6);
    assert_eq!(page(&lab, v4, 31080), "web-one");
    assert_eq!(page(&lab, v6, 31080), "web-one");
    assert_eq!(page(&lab, v4, 31090), "web-two");
    // The container itself, at its published host port (its server listens on 80),
    // and straight at 80. (busybox's wget crashes in this image; nc speaks HTTP.)
    for (address, port) in [
        ("127.0.0.1", 31080),
        ("198.18.0.1", 31080),
        ("2001:db8::1", 31080),
        ("127.0.0.1", 80),
    ] {
        let request =
            format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {address} {port}");
        let answer = podman.ok(&["exec", "web1", "/bin/sh", "-c", &request]);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.trim_end().ends_with("web-one"),
            "web1 asking {address} port {port}: {answer}"
        );
    }
    // UDP to the translated port reaches the container's port 80.
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "--network",
        "netiso",
        "-p",
        "31100:80/udp",
        IMAGE,
        "/bin/nc",
        "-u",
        "-l",
        "-k",
        "80",
    ]);
    wait_until("the UDP listener", Duration::from_secs(20), || {
        let pid = podman.ok(&["inspect", "-f", "{{.State.Pid}}", "udp"]);
        let listening = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["ss", "-Hlun", "sport", "=", ":80"])
            .output()
            .unwrap();
        !text(&listening.stdout).trim().is_empty()
    });
    send_udp(&lab.remote, SocketAddr::new(v4, 31100), 3, 12);
    // Each datagram is 12 'Z's (0x5a), which nc prints as it gets them.
    wait_until(
        "the datagrams in the container",
        Duration::from_secs(10),
        || podman.ok(&["logs", "udp"]).contains(&"Z".repeat(12)),
    );
    podman.ok(&["rm", "-f", "-t", "0", "udp"]);
    // The host's own ports still work.
    let host_service = lab
        .host
        .run(|| std::net::TcpListener::bind((HOST_IPV4, 9100)).unwrap());
    lab.remote
        .run(|| std::net::TcpStream::connect((HOST_IPV4, 9100)))
        .expect("the host's port 9100 answers");
    drop(host_service);
    let listed = attachments(&lab);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let web1 = listed
        .iter()
        .find(|c| c["port_mappings"].is_array())
        .expect("web1's mapping");
    assert_eq!(
        web1["port_mappings"],
        json!([{ "host_port": 31080, "container_port": 80 }])
    );
    // A container sending from a port it does not own gets nowhere, and it shows.
    let web1_id = web1["id"].as_str().unwrap().to_owned();
    let not_owned = || {
        let answer = api_request(&lab, "GET", &format!("/v1/statistics/{web1_id}"), "");
        answer.json()[0]["statistics"]["netiso_datapath_statistics"]["tx_dropped_port_not_owned"]
            .as_u64()
            .expect("the datapath's drop counter")
    };
    let before = not_owned();
    // (busybox's nc binds no local port as a client: openbsd's nc in its namespace.)
    let pid = podman.ok(&["inspect", "-f", "{{.State.Pid}}", "web1"]);
    let sent = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["nc", "-z", "-w", "1", "-p", "5555", "198.18.0.2", "9"])
        .output()
        .unwrap();
    assert!(
        !sent.status.success(),
        "a connection from port 5555 went out"
    );
    assert!(
        not_owned() > before,
        "the SYN from 5555 was dropped and counted"
    );
    // The agent killed and restarted: the containers keep being served.
    agent.kill();
    assert_eq!(page(&lab, v4, 31080), "web-one", "with the agent down");
    let agent = Agent::start(&lab, &[]);
    assert_eq!(attachments(&lab).len(), 2, "recovered");
    // stop, start, restart and rm: ADD and DEL in turn, nothing left at the end.
    podman.ok(&["stop", "-t", "0", "web2"]);
    assert_eq!(attachments(&lab).len(), 1, "stopped web2 is detached");
    podman.ok(&["start", "web2"]);
    assert_eq!(page(&lab, v4, 31090), "web-two");
    podman.ok(&["restart", "-t", "0", "web1"]);
    assert_eq!(page(&lab, v4, 31080), "web-one");
    let ids = podman.ok(&["ps", "-a", "-q", "--no-trunc"]);
    podman.ok(&["rm", "-f", "-t", "0", "web1", "web2"]);
    assert_eq!(attachments(&lab), Vec::<Value>::new());
    // No namespace name, veth, record or map entry of theirs is left.
    let names: Vec<String> = fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for id in ids.lines() {
        let prefix = format!("netiso-cni-{}", &id[..12]);
        assert!(
            !names.iter().any(|n| n.starts_with(&prefix)),
            "{prefix} is left"
        );
    }
    assert_holds_only_live_containers(&lab, &json!([]), "after podman rm");
    drop(agent);
}
