//! Command line: parses arguments and runs the chosen subcommand.
use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use hyper::Method;

use clap::{Parser, Subcommand};

use crate::{
    config::AgentArgs,
    control::{CreateRequest, UpdateRequest, client},
    failure::Failure,
    ports,
};

/// Per-container network isolation and monitoring for Linux hosts.
///
/// Containers share the host's IP addresses; each owns port ranges, and eBPF tc
/// programs steer, filter and count every packet by port.
#[derive(Debug, Parser)]
#[command(
    name = "netiso",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 success, 1 internal failure (the kernel, the disk), 2 bad command line, 3 invalid request, 4 no such container, 5 conflict (id or ports taken), 6 request too large, 7 try again later (agent unreachable or stopping, ports or slots used up)."
)]
pub struct Cli {
    /// The agent's control socket (the agent listens there; the other commands talk
    /// to it).
    #[arg(
        long = "api-socket",
        alias = "api_socket",
        env = "NETISO_API_SOCKET",
        global = true,
        value_name = "PATH",
        default_value = "/run/netiso/api.sock"
    )]
    pub api_socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load and attach the datapath, pin its maps, manage containers,
    /// serve statistics.
    Agent(Box<AgentArgs>),
    /// Create, list and destroy containers (through the agent).
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Check what this host's kernel offers netiso (tcx or netlink, BTF, bpffs, htb,
    /// fq_codel), probing in a throwaway namespace.
    Doctor,
    /// Run a command inside a container's network namespace, like
    /// `netiso exec web -- ss -ltn`; exits with the command's status.
    Exec {
        /// Container id.
        id: String,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print the containers' statistics: the JSON the agent serves at
    /// /monitor/statistics, one element per container.
    Stats {
        /// Only this container's.
        id: Option<String>,
    },
    /// Show packets the datapath drops as it drops them (time, container, direction,
    /// reason, protocol, addresses and ports, length), like `cilium monitor --type
    /// drop`; until Ctrl-C. Reports cost the datapath nothing while nobody watches,
    /// and are limited to 2000 a second per CPU (the line after a gap says how many
    /// were not shown).
    Monitor {
        /// Only this container's drops.
        id: Option<String>,
        /// Only drops for this reason.
        #[arg(long, value_parser = drop_reason_names())]
        reason: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the containers' live rates, refreshed every second: received and sent
    /// bit/s and packets/s, datapath drops per second and their main reason, the
    /// egress limit and its use, the ephemeral range. Keys sort (a r t d l n) and quit
    /// (q).
    Top {
        /// Print one plain table of the rates over one interval, and exit (for
        /// scripts).
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = positive_seconds)]
        interval: f64,
        /// What the rows are ordered by, largest first.
        #[arg(long, value_enum, default_value_t = crate::commands::top::SortKey::Traffic)]
        sort: crate::commands::top::SortKey,
    },
    /// Print a shell completion script, like
    /// `netiso completions bash > /etc/bash_completion.d/netiso`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (netiso.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    ManPages {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container: a network namespace sharing the host's addresses, an
    /// ephemeral port range, and the given ports. Prints the container as JSON.
    Create {
        /// Container id: 1 to 64 letters, digits, '-', '_' or '.'.
        id: String,
        /// Non-ephemeral ports from the agent's `ports`, like 31000-31499,31600.
        #[arg(long, value_name = "RANGES", default_value = "")]
        ports: String,
        /// Adopt this network namespace (a runtime's) instead of making one.
        #[arg(long, value_name = "PATH", conflicts_with = "pid")]
        netns: Option<PathBuf>,
        /// Adopt the network namespace of this process.
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
        /// A label for statistics, like `framework=web`; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The container's CPUs: rate limits per CPU give it that many whole CPUs'
        /// worth.
        #[arg(long, value_name = "N")]
        cpus: Option<f64>,
        /// The name of the container's interface (default: the public interface's).
        #[arg(long, value_name = "NAME")]
        interface: Option<String>,
    },
    /// List the containers as JSON.
    List,
    /// Change a container's ports or CPUs live; connections on ports it keeps go on,
    /// and rate limits per CPU follow its CPUs.
    Update {
        /// Container id.
        id: String,
        /// The new set of non-ephemeral ports, like 31000-31499 (empty: none).
        #[arg(long, value_name = "RANGES", required_unless_present = "cpus")]
        ports: Option<String>,
        /// The container's new number of CPUs.
        #[arg(long, value_name = "N")]
        cpus: Option<f64>,
    },
    /// Destroy a container and everything it had (no error if it does not exist).
    Destroy {
        /// Container id.
        id: String,
    },
}

/// Entry point of the `netiso` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Info and up, or what RUST_LOG says. The datapath's own lines (`--datapath-log`)
    // pass at any level, since the agent's flag chose them, unless RUST_LOG names
    // `netiso_datapath` itself.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .filter_module("netiso_datapath", log::LevelFilter::Trace)
        .parse_env(env_logger::Env::default())
        .format_target(false)
        .init();
    let result = match cli.command {
        Command::Agent(args) => crate::agent::run(*args, &cli.api_socket),
        Command::Container(command) => container(&cli.api_socket, command),
        Command::Exec { id, command } => exec(&cli.api_socket, &id, &command),
        Command::Stats { id } => stats(&cli.api_socket, id.as_deref()),
        Command::Doctor => crate::commands::doctor::run(),
        Command::Monitor { id, reason, json } => {
            crate::commands::monitor::run(&cli.api_socket, id.as_deref(), reason.as_deref(), json)
        }
        Command::Top {
            once,
            interval,
            sort,
        } => crate::commands::top::run(
            &cli.api_socket,
            once,
            std::time::Duration::from_secs_f64(interval),
            sort,
        ),
        Command::Completions { shell } => crate::commands::manual::print_completions(
            <Cli as clap::CommandFactory>::command(),
            shell,
        ),
        Command::ManPages { dir } => {
            crate::commands::manual::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head -1`) wanted no more: not an error.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            // One line: what went wrong, with its causes, which say what to do; the
            // exit status says what kind of failure it was (see `--help`).
            eprintln!("netiso: error: {error:#}");
            ExitCode::from(Failure::of(&error).exit_code())
        }
    }
}

fn container(socket: &std::path::Path, command: ContainerCommand) -> anyhow::Result<()> {
    let answer = match command {
        ContainerCommand::Create {
            id,
            ports,
            netns,
            pid,
            labels,
            cpus,
            interface,
        } => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("label '{l}' is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let request = CreateRequest {
                id,
                ports: ports::parse_list(&ports)?,
                netns,
                pid,
                labels,
                cpus,
                interface,
                attachment: None,
                bandwidth: None,
                port_mappings: Vec::new(),
            };
            client::call(
                socket,
                Method::POST,
                "/v1/containers",
                Some(serde_json::to_value(request)?),
            )?
        }
        ContainerCommand::List => client::call(socket, Method::GET, "/v1/containers", None)?,
        ContainerCommand::Update { id, ports, cpus } => client::call(
            socket,
            Method::PUT,
            &format!("/v1/containers/{id}"),
            Some(serde_json::to_value(UpdateRequest {
                ports: ports.as_deref().map(ports::parse_list).transpose()?,
                cpus,
            })?),
        )?,
        ContainerCommand::Destroy { id } => client::call(
            socket,
            Method::DELETE,
            &format!("/v1/containers/{id}"),
            None,
        )?,
    };
    print_json(&answer)
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(value)?)?;
    stdout.flush()?;
    Ok(())
}

fn stats(socket: &std::path::Path, id: Option<&str>) -> anyhow::Result<()> {
    let path = match id {
        Some(id) => format!("/v1/statistics/{id}"),
        None => "/v1/statistics".to_owned(),
    };
    let answer = client::call(socket, Method::GET, &path, None)?;
    print_json(&answer)
}

/// Finds the container through the agent, enters its network namespace and runs the
/// command there (replacing this process).
fn exec(socket: &std::path::Path, id: &str, command: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;

    let list = client::call(socket, Method::GET, "/v1/containers", None)?;
    let netns = list
        .as_array()
        .and_then(|all| all.iter().find(|c| c["id"] == id))
        .and_then(|c| c["netns"].as_str().map(PathBuf::from))
        .with_context(|| format!("no container {id}; see `netiso container list`"))?;
    let file =
        std::fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering the namespace of {id}"))?;
    let error = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    Err(error).with_context(|| format!("running {}", command[0]))
}

fn drop_reason_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        netiso_common::DropReason::ALL.map(netiso_common::DropReason::name),
    )
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 3600"
        )),
    }
}
