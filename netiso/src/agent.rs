//! The agent: checks the host, loads and attaches the datapath, serves HTTP, and shuts
//! down cleanly on SIGINT/SIGTERM.
use anyhow::{Context as _, bail};
use tokio::{
    io::Interest,
    signal::unix::{SignalKind, signal},
};

use std::{path::Path, sync::Arc};

use crate::{
    commands::doctor,
    config::{self, AgentArgs},
    control::{Manager, ManagerHandle, Shaping},
    datapath::{
        self, AttachMode, ContainerLoopbackProgram, Datapath, DatapathLogger, DropEventMaps, bpffs,
        drop_events::DropEventReader,
    },
    net::{NetlinkSocket, container_device::probe_netkit, host::HostNetwork},
    ports::PortLedger,
    server::{Limits, StatisticsSource, control_api, statistics_http},
    stats::Collector,
    tc::{EgressFlows, FlowQdiscParent, egress_flows, rate_policy},
};

/// Runs the agent until SIGINT or SIGTERM. Start-up is synchronous (checks, datapath,
/// recovery); the async runtime only serves.
/// Raises the soft limit on open files to the hard one: each container's statistics
/// probes hold a few descriptors, and a service manager's soft limit (often 1024)
/// would leave containers past a thousand out of the statistics.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::debug!("open files limit raised from {soft} to {hard}"),
            Err(error) => log::warn!("cannot raise the open files limit from {soft}: {error}"),
        },
        Ok(_) => {}
        Err(error) => log::warn!("cannot read the open files limit: {error}"),
    }
}

pub fn run(args: AgentArgs, api_socket: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the agent must run as root (it loads eBPF programs and manages namespaces); run it with sudo"
        );
    }
    raise_open_files_limit();
    let mut args = args;
    // Checks on the flags alone come first; then the host's interfaces.
    let ports = config::check(&args, config::host_ephemeral_range()?)?;
    let (eth0, lo) = interfaces(&args)?;
    args.eth0_name = Some(eth0.clone());
    args.lo_name = Some(lo.clone());
    let mut host = HostNetwork::discover(&eth0)?;
    let mut shaping = shaping(&args, ports.cpus, &eth0)?;
    // Everything that can fail on bad input is checked before anything is attached.
    let http_listener = statistics_http::bind(args.listen)?;
    let api_listener = control_api::bind(api_socket)?;
    // Removed however we leave, so a refused or stopped agent leaves no socket.
    let _socket_file = SocketFile(api_socket.to_owned());
    let ledger = ports.ledger();
    shaping.egress_flows = unique_egress_flows(&args, &host, &ledger, shaping.fq_codel)?;
    crate::net::host_mounts::configure(&args.host_mount_namespace)?;
    // Probed in a namespace of its own, which needs the mounts above.
    host.container_device = args.container_device.resolve(probe_netkit())?;
    // Before containers can send anything: which host services they may reach.
    let agent_port = http_listener
        .local_addr()
        .context("reading the HTTP server's address")?
        .port();
    let (mut datapath, attach_mode) = attach_datapath(&args, &host, &shaping, agent_port)?;
    host.prepare_loopback(&lo)?;
    datapath.attach_host_lo(&lo)?;
    log_attachment(&datapath, &host, attach_mode, &eth0, &lo);
    let health = statistics_http::Health {
        status: "ok",
        public_interface: eth0.clone(),
        attach_mode,
        bpffs_root: args.bpffs_root.display().to_string(),
    };
    let drop_events = datapath
        .take_drop_events()
        .context("the datapath's drop event maps were taken already")?;
    let datapath_log = datapath.take_logger();
    let mut manager = Manager::new(datapath, host, ledger, shaping, &args.state_dir)?;
    // The ready line comes after recovery.
    let (recovered, removed) = manager.recover()?;
    log::info!("recovered {recovered} containers; removed {removed} orphaned or half-made ones");
    let collector = Arc::new(Collector::new(args.statistics.clone(), &args.bpffs_root)?);
    let manager = ManagerHandle::spawn(manager);
    let stats = StatisticsSource {
        manager: manager.clone(),
        collector,
    };
    let limits = Limits {
        max_connections: args.servers.max_connections,
        timeout: args.servers.timeout.0,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(
        Listeners {
            http: http_listener,
            api: api_listener,
        },
        limits,
        health,
        manager,
        stats,
        DatapathReaders {
            drop_events,
            log: datapath_log,
        },
        &format!(
            "netiso agent ready: public interface {eth0}, http://{}/health",
            args.listen
        ),
    ))
}

/// How containers are shaped: the rate flags, refused without htb; fq_codel leaves
/// where the kernel has fq_codel.
fn shaping(args: &AgentArgs, cpus: Option<f64>, eth0: &str) -> anyhow::Result<Shaping> {
    let rates = config::rate_policy(args, cpus, || rate_policy::link_speed(eth0))?;
    let checks = check_kernel()?;
    let has = |name: &str| checks.iter().any(|c| c.name == name && c.ok);
    if (rates.egress.is_limited() || rates.ingress.is_limited()) && !has("htb") {
        bail!(
            "the kernel lacks the htb qdisc, which the rate limit flags need; load sch_htb or drop the rate flags (see `netiso doctor`)"
        );
    }
    Ok(Shaping {
        rates,
        fq_codel: has("fq_codel"),
        egress_flows: None,
    })
}

/// Loads (or takes over, or upgrades) the datapath, configures it and attaches it to
/// the public interface; the host lo's attachment follows once lo is prepared.
fn attach_datapath(
    args: &AgentArgs,
    host: &HostNetwork,
    shaping: &Shaping,
    agent_port: u16,
) -> anyhow::Result<(Datapath, AttachMode)> {
    bpffs::prepare_pin_root(&args.bpffs_root)?;
    let mut datapath = Datapath::load(&args.bpffs_root, args.datapath_log, host.public.mtu)?;
    datapath.configure(
        host,
        shaping.egress_flows.as_ref().map_or(0, |f| f.qdisc.handle),
        datapath::redirect_peer_probe::delivery_for_running_kernel(),
    )?;
    let host_ports = &args.servers.container_host_ports;
    let closed = datapath.set_host_port_access(|port| host_ports.closed(port, agent_port))?;
    log::info!("containers may reach {} host ports", 65536 - closed);
    datapath::host_addresses::keep_up_to_date(datapath.maps_dir())?;
    let attach_mode = datapath.attach_public_iface(&host.public.name)?;
    Ok((datapath, attach_mode))
}

/// Says where the datapath is attached and what containers get.
fn log_attachment(datapath: &Datapath, host: &HostNetwork, mode: AttachMode, eth0: &str, lo: &str) {
    if datapath.upgrading() {
        log::info!(
            "datapath: the new programs replace the old ones on {eth0}, {lo} and every container after recovery ({mode:?})"
        );
    } else {
        log::info!(
            "datapath attached to {eth0} and {lo} ({mode:?}); maps pinned under {}",
            datapath.pin_root().display()
        );
    }
    log::info!("new containers get {} pairs", host.container_device);
    match datapath.container_loopback_program() {
        ContainerLoopbackProgram::Shared => {
            log::info!("containers' lo: one shared program (by namespace cookie)");
        }
        ContainerLoopbackProgram::PerContainer => log::info!(
            "containers' lo: a program copy per container (this kernel's tc programs cannot read a namespace cookie: 6.15 or later can)"
        ),
    }
}

/// Serves both servers until SIGINT or SIGTERM.
/// What the agent reads from the datapath on its runtime: drop events, and the
/// programs' log if it is on.
struct DatapathReaders {
    drop_events: DropEventMaps,
    log: Option<DatapathLogger>,
}

/// The servers' sockets, bound before anything is attached.
struct Listeners {
    http: std::net::TcpListener,
    api: std::os::unix::net::UnixListener,
}

async fn serve(
    listeners: Listeners,
    limits: Limits,
    health: statistics_http::Health,
    manager: ManagerHandle,
    stats: StatisticsSource,
    readers: DatapathReaders,
    ready_line: &str,
) -> anyhow::Result<()> {
    let drops = DropEventReader::start(readers.drop_events)?;
    if let Some(logger) = readers.log {
        tokio::spawn(forward_datapath_log(logger));
    }
    let server = tokio::spawn(statistics_http::serve(
        listeners.http,
        limits,
        health,
        stats.clone(),
    ));
    let api_server = tokio::spawn(control_api::serve(
        listeners.api,
        limits,
        manager,
        stats,
        drops,
    ));
    // Handlers first: a SIGTERM right after the ready line must stop us cleanly.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Scripts and tests wait for this line.
    println!("{ready_line}");
    tokio::select! {
        _ = sigterm.recv() => log::info!("SIGTERM received, stopping"),
        _ = sigint.recv() => log::info!("SIGINT received, stopping"),
    }
    server.abort();
    api_server.abort();
    // The datapath stays in the kernel: containers keep their network while the
    // agent is down.
    Ok(())
}

/// Copies the programs' log records (`--datapath-log`) into the agent's log as they
/// come.
async fn forward_datapath_log(logger: DatapathLogger) {
    // SAFETY: the logger owns its ring buffer's descriptor for as long as the AsyncFd
    // that owns the logger lives.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(error) => {
            log::warn!(
                "the datapath's log cannot be read: {}",
                error.into_parts().1
            );
            return;
        }
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// The public and loopback interfaces: as given, or found as Mesos finds them.
fn interfaces(args: &AgentArgs) -> anyhow::Result<(String, String)> {
    let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
    let eth0 = match &args.eth0_name {
        Some(name) => name.clone(),
        None => {
            let index = socket.default_route_ifindex()?.context(
                "Network Isolator failed to find a public interface: there is no default IPv4 route; pass --eth0_name",
            )?;
            socket.link_by_index(index)?.name
        }
    };
    let lo = match &args.lo_name {
        Some(name) => name.clone(),
        None => {
            socket
                .loopback()?
                .context("Network Isolator failed to find a loopback interface; pass --lo_name")?
                .name
        }
    };
    for (name, flag) in [(&eth0, "--eth0_name"), (&lo, "--lo_name")] {
        if socket.link(name)?.is_none() {
            bail!(
                "interface {name} does not exist in this network namespace; pass the right one with {flag} (see `ip link`)"
            );
        }
    }
    Ok((eth0, lo))
}

/// Puts the fq_codel for unique egress flows on the public interface, when asked
/// for and the kernel has fq_codel; without it the agent runs on, with a warning,
/// and containers share the interface's queue.
fn unique_egress_flows(
    args: &AgentArgs,
    host: &HostNetwork,
    ports: &PortLedger,
    fq_codel: bool,
) -> anyhow::Result<Option<EgressFlows>> {
    if !args.egress.unique_flow_per_container {
        return Ok(None);
    }
    if !fq_codel {
        log::warn!(
            "--egress_unique_flow_per_container is not applied: the kernel lacks the fq_codel qdisc, so containers share the public interface's queue (see `netiso doctor`)"
        );
        return Ok(None);
    }
    let parent = FlowQdiscParent::parse(&args.egress.flow_classifier_parent)?;
    let containers = ports.capacity().min(netiso_common::MAX_CONTAINERS as usize) as u32;
    let qdisc = egress_flows::install(
        &mut NetlinkSocket::route()?,
        host.public.index,
        &host.public.name,
        parent,
        containers,
    )?;
    log::info!(
        "unique egress flows: fq_codel {:x}: on {} with {} flows",
        qdisc.handle >> 16,
        host.public.name,
        qdisc.flows
    );
    Ok(Some(EgressFlows::new(qdisc)))
}

/// The control socket's file, removed on drop.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Refuses to start on a kernel that lacks something netiso needs, naming it, and
/// warns once about each optional feature that is missing. Returns the checks.
fn check_kernel() -> anyhow::Result<Vec<doctor::Check>> {
    let checks = doctor::checks();
    for check in &checks {
        match (check.ok, check.required) {
            (true, _) => {}
            (false, true) => bail!(
                "the kernel lacks {}: {}; see `netiso doctor`",
                check.name,
                check.detail
            ),
            (false, false) => log::warn!("{}: {}", check.name, check.detail),
        }
    }
    Ok(checks)
}
