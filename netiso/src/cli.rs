//! Command line: parses arguments and runs the chosen subcommand.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::AgentArgs;

/// Per-container network isolation and monitoring for Linux hosts.
///
/// Containers share the host's IP addresses; each owns port ranges, and eBPF tc
/// programs steer, filter and count every packet by port.
#[derive(Debug, Parser)]
#[command(name = "netiso", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load and attach the datapath, pin its maps, serve statistics.
    Agent(AgentArgs),
}

/// Entry point of the `netiso` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let result = match cli.command {
        Command::Agent(args) => crate::agent::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: what went wrong, with its causes, which say what to do.
            eprintln!("netiso: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
