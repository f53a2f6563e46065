//! The agent: checks the host, loads and attaches the datapath, serves HTTP, and shuts
//! down cleanly on SIGINT/SIGTERM.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use crate::{bpffs, container::HostNetwork, datapath::Datapath, http};

/// Options of `netiso agent`. Mesos spellings (underscores) are accepted as aliases.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Public interface whose traffic the datapath steers and counts.
    #[arg(long = "eth0-name", alias = "eth0_name", value_name = "IFACE")]
    pub eth0_name: String,

    /// Directory on a BPF filesystem where maps are pinned (kept across restarts).
    #[arg(
        long = "bpffs-root",
        alias = "bpffs_root",
        value_name = "DIR",
        default_value = "/sys/fs/bpf/netiso"
    )]
    pub bpffs_root: PathBuf,

    /// Address of the read-only HTTP server (health and statistics).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
}

/// The name of the host's loopback (found by `HostNetwork::discover`).
fn host_lo_name(host: &HostNetwork) -> String {
    nix::net::if_::if_indextoname(host.lo_index)
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "lo".to_owned())
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the agent must run as root (it loads eBPF programs and manages namespaces); run it with sudo"
        );
    }
    // Netlink queries run on their own small runtime, so before the agent's starts.
    let host = HostNetwork::discover(&args.eth0_name)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args, host))
}

async fn run_async(args: AgentArgs, host: HostNetwork) -> anyhow::Result<()> {
    // Everything that can fail on bad input is checked before anything is attached.
    let listener = http::bind(args.listen).await?;
    bpffs::prepare_pin_root(&args.bpffs_root)?;
    let mut datapath = Datapath::load(&args.bpffs_root)?;
    datapath.configure(&host)?;
    let attach_mode = datapath.attach_public_iface(&args.eth0_name)?;
    let lo = host_lo_name(&host);
    host.prepare_loopback(&lo)?;
    datapath.attach_host_lo(&lo)?;
    log::info!(
        "datapath attached to {} ({attach_mode:?}); maps pinned under {}",
        args.eth0_name,
        datapath.pin_root().display()
    );
    let health = http::Health {
        status: "ok",
        public_interface: args.eth0_name.clone(),
        attach_mode,
        bpffs_root: args.bpffs_root.display().to_string(),
    };
    let server = tokio::spawn(http::serve(listener, health));
    // Scripts and tests wait for this line.
    println!(
        "netiso agent ready: public interface {}, http://{}/health",
        args.eth0_name, args.listen
    );

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = sigterm.recv() => log::info!("SIGTERM received, stopping"),
        _ = sigint.recv() => log::info!("SIGINT received, stopping"),
    }
    server.abort();
    drop(datapath);
    Ok(())
}
