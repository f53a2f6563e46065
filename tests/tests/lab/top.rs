//! `netiso top`: live rates in a real terminal (tmux: keys sent, the screen read back),
//! and `--once`'s plain table.
use std::{
    net::IpAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use netiso_tests::{
    agent::{Agent, cli, netiso_bin},
    lab::{HOST_IPV4, Lab, send_udp},
    netns::Netns,
    wait::wait_until,
};

use super::statistics::udp_sink;

/// UDP datagrams to `port` of the host's address from the remote, until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    sender: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lab: &Lab, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let remote = Netns::existing(lab.remote.name());
        let flag = Arc::clone(&stop);
        let sender = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                send_udp(&remote, (HOST_IPV4, port).into(), 50, 1000);
                thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            sender: Some(sender),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// A tmux server of the test's own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn two_containers(lab: &Lab) -> (String, String) {
    let mut ids = Vec::new();
    for (name, ports) in [("web", "31000-31009"), ("db", "31010-31019")] {
        let id = lab.container_id(name);
        let (ok, _, stderr) = cli(lab, &["container", "create", &id, "--ports", ports]);
        assert!(ok, "{stderr}");
        ids.push(id);
    }
    (ids.remove(0), ids.remove(0))
}

/// The numbers of `id`'s line in a table or screen.
fn line_of<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.trim_start().starts_with(id))
}

/// The RX bit/s cell of a container's line (the value and unit after its id).
fn received(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().skip(1);
    Some(format!("{} {}", words.next()?, words.next()?))
}

#[test]
fn top_shows_live_rates_in_a_terminal_and_sorts_on_a_key() {
    if netiso_tests::skipped_in_vm("netiso top does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &["--egress_rate_limit_per_container=1MB"]);
    let (web, db) = two_containers(&lab);
    let web_ns = Netns::existing(&format!("netiso-{web}"));
    let _sink = udp_sink(&web_ns, IpAddr::V4(HOST_IPV4), 31000);
    let _traffic = Traffic::start(&lab, 31000);

    let tmux = Tmux {
        socket: std::env::temp_dir()
            .join(format!("{web}-tmux"))
            .display()
            .to_string(),
    };
    let command = format!(
        "NETISO_API_SOCKET={} {} top",
        lab.api_socket().display(),
        netiso_bin().display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "200",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    // The web container receives at ~50 kB a 20 ms round: its rate shows.
    wait_until("web's rates on the screen", Duration::from_secs(30), || {
        let screen = tmux.screen();
        line_of(&screen, &web).is_some_and(|l| received(l).is_some_and(|rx| rx != "0 bit/s"))
    });
    let screen = tmux.screen();
    assert!(
        screen.contains("netiso top: 2 containers, sorted by traffic"),
        "{screen}"
    );
    assert!(screen.contains("RX bit/s*"), "{screen}");
    let web_line = line_of(&screen, &web).unwrap();
    // The egress limit (1 MiB/s = 8.4 Mbit/s) and the ephemeral range are shown.
    assert!(web_line.contains("8.4 Mbit/s"), "{web_line}");
    let (_, listed, _) = cli(&lab, &["container", "list"]);
    let range = &listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == web.as_str())
        .unwrap()["ephemeral_ports"];
    assert!(
        web_line.contains(&format!("{}-{}", range["begin"], range["end"])),
        "{web_line} {range}"
    );
    let db_line = line_of(&screen, &db).expect("db's line");
    assert_eq!(received(db_line).as_deref(), Some("0 bit/s"), "{db_line}");
    // The busier container first.
    assert!(
        screen.find(&web).unwrap() < screen.find(&db).unwrap(),
        "{screen}"
    );

    // Sorted by name: db before web.
    tmux.run(&["send-keys", "-t", "top", "n"]);
    wait_until("the rows sorted by name", Duration::from_secs(10), || {
        let screen = tmux.screen();
        screen.contains("CONTAINER*")
            && screen
                .find(&db)
                .zip(screen.find(&web))
                .is_some_and(|(d, w)| d < w)
    });
    tmux.run(&["send-keys", "-t", "top", "q"]);
    wait_until("top to quit on q", Duration::from_secs(10), || {
        !tmux.run(&["has-session", "-t", "top"]).status.success()
    });
}

#[test]
fn top_once_prints_one_plain_table() {
    if netiso_tests::skipped_in_vm("netiso top does not depend on the kernel") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let (web, db) = two_containers(&lab);
    let web_ns = Netns::existing(&format!("netiso-{web}"));
    let _sink = udp_sink(&web_ns, IpAddr::V4(HOST_IPV4), 31000);
    let _traffic = Traffic::start(&lab, 31000);
    let output = Command::new(netiso_bin())
        .args(["top", "--once", "--interval", "1", "--sort", "container"])
        .env("NETISO_API_SOCKET", lab.api_socket())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("CONTAINER"), "{table}");
    assert!(
        lines[1].starts_with(&db) && lines[2].starts_with(&web),
        "{table}"
    );
    let columns: Vec<&str> = lines[2].split("  ").filter(|c| !c.is_empty()).collect();
    // RX pkt/s: tens of datagrams a second at least.
    let rx_packets: f64 = columns[3].trim().trim_end_matches('k').parse().unwrap();
    assert!(rx_packets > 0.0, "{table}");
    assert_eq!(received(lines[1]).as_deref(), Some("0 bit/s"), "{table}");
    let bad = Command::new(netiso_bin())
        .args(["top", "--interval", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
