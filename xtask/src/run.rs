//! `cargo xtask run`: the self-contained demo, or the agent for real.
//!
//! The demo touches none of the machine's interfaces: it adds one veth pair, whose root
//! namespace end `netiso-demo0` plays the public interface and whose peer lives in the
//! demo's `remote` namespace, and removes it again on Ctrl-C.
use std::{
    fs,
    net::UdpSocket,
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
    cmd::{self, cargo, output, step, workspace_root},
    setup,
};

const DEMO_NETNS: &str = "netiso-demo-remote";
const DEMO_IFACE: &str = "netiso-demo0";
const DEMO_PIN_ROOT: &str = "/sys/fs/bpf/netiso-demo";
const DEMO_LISTEN: &str = "127.0.0.1:5051";
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
    cmd::run(
        "building netiso",
        cargo().args(["build", "--package", "netiso", "--bins"]),
    )?;
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

/// The demo's namespace, veth and pins; removed on drop, also after an error.
struct DemoNetwork;

impl DemoNetwork {
    fn create() -> anyhow::Result<Self> {
        remove_demo_network(); // leftovers of a demo that was killed
        let network = DemoNetwork;
        step(&format!(
            "creating the demo network: {DEMO_IFACE} ({DEMO_HOST_IPV4}) <-> {DEMO_NETNS} ({DEMO_REMOTE_IPV4})"
        ));
        let ip = |args: &[&str]| output(Command::new("ip").args(args)).map(drop);
        ip(&["netns", "add", DEMO_NETNS])?;
        ip(&[
            "link", "add", "name", DEMO_IFACE, "type", "veth", "peer", "name", "eth0", "netns",
            DEMO_NETNS,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{DEMO_HOST_IPV4}/24"),
            "dev",
            DEMO_IFACE,
        ])?;
        ip(&["addr", "add", "2001:db8::1/64", "dev", DEMO_IFACE, "nodad"])?;
        ip(&["link", "set", DEMO_IFACE, "up"])?;
        ip(&[
            "-n",
            DEMO_NETNS,
            "addr",
            "add",
            &format!("{DEMO_REMOTE_IPV4}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            DEMO_NETNS,
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", DEMO_NETNS, "link", "set", "eth0", "up"])?;
        ip(&["-n", DEMO_NETNS, "link", "set", "lo", "up"])?;
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
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip").args(args).output();
    };
    quiet(&["netns", "del", DEMO_NETNS]); // takes the veth pair with it
    quiet(&["link", "del", DEMO_IFACE]);
    let _ = fs::remove_dir_all(DEMO_PIN_ROOT);
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
    let mut agent = AgentChild(
        Command::new(netiso)
            .args([
                "agent",
                "--eth0-name",
                DEMO_IFACE,
                "--bpffs-root",
                DEMO_PIN_ROOT,
                "--listen",
                DEMO_LISTEN,
            ])
            .spawn()
            .context("starting netiso agent")?,
    );
    let traffic = start_demo_traffic(Arc::clone(&stop))?;
    println!(
        "\nnetiso demo running. Try:\n  \
         curl -s http://{DEMO_LISTEN}/health\n  \
         bpftool map dump pinned {DEMO_PIN_ROOT}/PUBLIC_IFACE_COUNTERS\n\
         The demo's remote namespace sends one UDP datagram a second to {DEMO_HOST_IPV4}.\n\
         Press Ctrl-C to stop and remove everything.\n"
    );
    while !stop.load(Ordering::SeqCst) {
        if let Some(status) = agent.0.try_wait()? {
            stop.store(true, Ordering::SeqCst);
            let _ = traffic.join();
            return exit_result(status).context("the demo stopped because the agent exited");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let _ = traffic.join();
    agent.stop()
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
fn start_demo_traffic(stop: Arc<AtomicBool>) -> anyhow::Result<thread::JoinHandle<()>> {
    let ns = fs::File::open(format!("/run/netns/{DEMO_NETNS}"))?;
    Ok(thread::spawn(move || {
        if setns(&ns, CloneFlags::CLONE_NEWNET).is_err() {
            return;
        }
        let Ok(socket) = UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        while !stop.load(Ordering::SeqCst) {
            let _ = socket.send_to(b"netiso demo", (DEMO_HOST_IPV4, 9));
            for _ in 0..10 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }))
}
