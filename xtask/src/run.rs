//! `cargo xtask run`: the self-contained demo, or the agent for real.
//!
//! The demo touches none of the machine's interfaces: the agent runs in a namespace
//! `netiso-demo-host` whose `eth0` is a veth to `netiso-demo-remote`, and a small
//! forwarder makes its HTTP server reachable at 127.0.0.1:5051 from the machine.
//! Ctrl-C removes both namespaces and the demo's pinned maps.
use std::{
    fs,
    io::{self, ErrorKind},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Args;
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    cmd::{self, output, step, workspace_root},
    setup,
};

const DEMO_HOST_NETNS: &str = "netiso-demo-host";
const DEMO_REMOTE_NETNS: &str = "netiso-demo-remote";
const DEMO_IFACE: &str = "eth0";
const DEMO_PIN_ROOT: &str = "/sys/fs/bpf/netiso-demo";
/// The demo agent's control socket and state, on tmpfs, removed at the end.
const DEMO_RUN_DIR: &str = "/run/netiso-demo";
/// The demo's containers and their ports.
const DEMO_CONTAINERS: [(&str, u16); 2] = [("demo-web", 31000), ("demo-db", 31100)];
const DEMO_LISTEN: &str = "127.0.0.1:5051";
/// Mesos's test layout; the demo host keeps Linux's default ephemeral range.
const DEMO_RESOURCES: &str = "ports:[31000-32000];ephemeral_ports:[30001-30999]";
const DEMO_HOST_IPV4: &str = "198.18.0.1";
const DEMO_REMOTE_IPV4: &str = "198.18.0.2";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Flags for `netiso agent`; with none, the demo runs instead.
    #[arg(last = true, value_name = "AGENT FLAGS")]
    pub agent_args: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    cmd::build_agent()?;
    let netiso = workspace_root().join("target/debug/netiso");
    if !args.agent_args.is_empty() {
        let status = Command::new(&netiso)
            .arg("agent")
            .args(&args.agent_args)
            .status()
            .context("starting netiso agent")?;
        return exit_result(status);
    }
    demo(&netiso)
}

fn exit_result(status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("netiso agent exited with {status}")
    }
}

/// The demo's namespaces, veth pair and pins; removed on drop, also after an error.
struct DemoNetwork;

impl DemoNetwork {
    fn create() -> anyhow::Result<Self> {
        remove_demo_network(); // leftovers of a demo that was killed
        let network = DemoNetwork;
        step(&format!(
            "creating the demo network: {DEMO_HOST_NETNS} ({DEMO_HOST_IPV4}) <-> {DEMO_REMOTE_NETNS} ({DEMO_REMOTE_IPV4})"
        ));
        let ip = |args: &[&str]| output(Command::new("ip").args(args)).map(drop);
        for ns in [DEMO_HOST_NETNS, DEMO_REMOTE_NETNS] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Both ends are created inside their namespaces: the root namespace never
        // sees them.
        ip(&[
            "link",
            "add",
            "name",
            DEMO_IFACE,
            "netns",
            DEMO_REMOTE_NETNS,
            "type",
            "veth",
            "peer",
            "name",
            DEMO_IFACE,
            "netns",
            DEMO_HOST_NETNS,
        ])?;
        for (ns, v4, v6) in [
            (DEMO_HOST_NETNS, DEMO_HOST_IPV4, "2001:db8::1"),
            (DEMO_REMOTE_NETNS, DEMO_REMOTE_IPV4, "2001:db8::2"),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                DEMO_IFACE,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                DEMO_IFACE,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", DEMO_IFACE, "up"])?;
        }
        ip(&[
            "-n",
            DEMO_HOST_NETNS,
            "route",
            "add",
            "default",
            "via",
            DEMO_REMOTE_IPV4,
        ])?;
        Ok(network)
    }
}

impl Drop for DemoNetwork {
    fn drop(&mut self) {
        step("removing the demo network and its pinned maps");
        remove_demo_network();
    }
}

fn remove_demo_network() {
    for ns in [DEMO_HOST_NETNS, DEMO_REMOTE_NETNS] {
        // Deleting a namespace deletes the veth end inside it.
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    for (name, _) in DEMO_CONTAINERS {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("netiso-{name}")])
            .output();
    }
    let _ = fs::remove_dir_all(DEMO_PIN_ROOT);
    let _ = fs::remove_dir_all(DEMO_RUN_DIR);
}

/// Opens the file of the named namespace `ns`.
fn netns_file(ns: &str) -> io::Result<fs::File> {
    fs::File::open(format!("/run/netns/{ns}"))
}

/// Enters the network namespace `ns` on the calling thread.
fn enter(ns: &str) -> io::Result<()> {
    setns(netns_file(ns)?, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn demo(netiso: &PathBuf) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let _network = DemoNetwork::create()?;
    step("starting the agent");
    let host_ns = netns_file(DEMO_HOST_NETNS)?;
    let mut agent_command = Command::new(netiso);
    // SAFETY: setns is async-signal-safe and the closure allocates nothing. Only the
    // network namespace changes, so the agent pins its maps in the machine's bpffs.
    unsafe {
        agent_command
            .pre_exec(move || setns(&host_ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    let forwarder = start_http_forwarder(Arc::clone(&stop))?;
    let mut agent = AgentChild(
        agent_command
            .args([
                "agent",
                "--eth0-name",
                DEMO_IFACE,
                "--bpffs-root",
                DEMO_PIN_ROOT,
                "--listen",
                DEMO_LISTEN,
                "--resources",
                DEMO_RESOURCES,
                "--ephemeral_ports_per_container=16",
                "--api-socket",
                &api_socket(),
                "--state-dir",
                &format!("{DEMO_RUN_DIR}/state"),
            ])
            .spawn()
            .context("starting netiso agent")?,
    );
    create_demo_containers(netiso, &mut agent)?;
    let traffic = start_demo_traffic(Arc::clone(&stop));
    println!(
        "\nnetiso demo running. Try:\n  \
         curl -s http://{DEMO_LISTEN}/monitor/statistics.json | jq\n  \
         curl -s http://{DEMO_LISTEN}/metrics\n  \
         curl -s http://{DEMO_LISTEN}/health\n  \
         bpftool map dump pinned {DEMO_PIN_ROOT}/PUBLIC_IFACE_COUNTERS\n\
         The agent runs in the namespace {DEMO_HOST_NETNS}, whose eth0 faces {DEMO_REMOTE_NETNS};\n\
         the remote sends one UDP datagram a second to {DEMO_HOST_IPV4} port 9 (the host)\n\
         and ports 31000 and 31100 (the containers demo-web and demo-db).\n  \
         {} --api-socket {} container list   (or: stats demo-web)\n\
         Press Ctrl-C to stop and remove everything.\n",
        netiso.display(),
        api_socket()
    );
    while !stop.load(Ordering::SeqCst) {
        if let Some(status) = agent.0.try_wait()? {
            stop.store(true, Ordering::SeqCst);
            let _ = traffic.join();
            let _ = forwarder.join();
            return exit_result(status).context("the demo stopped because the agent exited");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let _ = traffic.join();
    let _ = forwarder.join();
    agent.stop()
}

fn api_socket() -> String {
    format!("{DEMO_RUN_DIR}/api.sock")
}

/// Waits for the agent's control socket, then creates the demo's containers with the
/// CLI, as an operator would.
fn create_demo_containers(netiso: &PathBuf, agent: &mut AgentChild) -> anyhow::Result<()> {
    let socket = api_socket();
    for _ in 0..300 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break;
        }
        if let Some(status) = agent.0.try_wait()? {
            return exit_result(status).context("the agent exited before it was ready");
        }
        thread::sleep(Duration::from_millis(100));
    }
    for (name, port) in DEMO_CONTAINERS {
        step(&format!(
            "creating container {name} with ports {port}-{}",
            port + 99
        ));
        cmd::run(
            &format!("netiso container create {name}"),
            Command::new(netiso).args([
                "--api-socket",
                &socket,
                "container",
                "create",
                name,
                "--ports",
                &format!("{port}-{}", port + 99),
                "--label",
                "demo=yes",
            ]),
        )?;
    }
    Ok(())
}

/// The agent process, stopped with SIGTERM (then SIGKILL) when dropped.
struct AgentChild(Child);

impl AgentChild {
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.0.try_wait()?.is_none() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        }
        for _ in 0..50 {
            if self.0.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for AgentChild {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A thread in the demo's remote namespace sending one datagram a second to the host.
fn start_demo_traffic(stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        if enter(DEMO_REMOTE_NETNS).is_err() {
            return;
        }
        let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        while !stop.load(Ordering::SeqCst) {
            for port in [9, DEMO_CONTAINERS[0].1, DEMO_CONTAINERS[1].1] {
                let _ = socket.send_to(b"netiso demo", (DEMO_HOST_IPV4, port));
            }
            for _ in 0..10 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Listens on 127.0.0.1:5051 on the machine and relays each connection to the agent's
/// HTTP server inside the demo's host namespace.
fn start_http_forwarder(stop: Arc<AtomicBool>) -> anyhow::Result<thread::JoinHandle<()>> {
    let listener = TcpListener::bind(DEMO_LISTEN).with_context(|| {
        format!("listening on {DEMO_LISTEN}; is a demo or an agent already running?")
    })?;
    listener.set_nonblocking(true)?;
    Ok(thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    thread::spawn(move || relay(client));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(_) => return,
            }
        }
    }))
}

/// Copies bytes both ways between `client` and the agent until either side closes.
fn relay(client: TcpStream) {
    let Ok(agent) = enter(DEMO_HOST_NETNS).and_then(|()| TcpStream::connect(DEMO_LISTEN)) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(mut client_read), Ok(mut agent_write)) = (client.try_clone(), agent.try_clone()) else {
        return;
    };
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut agent_write);
        let _ = agent_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut agent_read, mut client_write) = (agent, client);
    let _ = io::copy(&mut agent_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}
