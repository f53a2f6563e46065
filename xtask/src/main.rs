//! Developer tasks for netiso: `cargo xtask setup | run | test | bench | fuzz | vm-test`.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cmd;
mod fuzz;
mod layout;
mod package;
mod previous_release;
mod run;
mod setup;
mod systemd_vm;
mod test;
mod vm;
mod vm_kernels;
mod vm_lanes;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "netiso developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, rust-src, bpf-linker,
    /// virtme-ng). Fast and silent when everything is there.
    Setup,
    /// Build and start a self-contained demo (no argument), or run the agent for real
    /// with the given flags: `cargo xtask run -- --eth0-name eth0`.
    Run(run::RunArgs),
    /// Every check CI runs: fmt, clippy (userspace and eBPF), unit, BPF test-run and lab
    /// tests on this kernel, the Debian package (built and checked), then the VM tests
    /// on Debian's 6.12 (netkit containers, then some with veth) and 5.10 kernels and
    /// the package under systemd in a third VM.
    Test(test::TestArgs),
    /// Benchmarks: per-packet cost of the datapath against the number of containers
    /// (`datapath`), scrape time and memory with up to 1000 containers (`stats`);
    /// both without an argument.
    Bench {
        #[arg(value_enum)]
        which: Option<bench::Bench>,
        /// Run the traffic benchmark in a VM booting this kernel instead of on this
        /// one (`6.12`: netkit against veth in the same run). Under emulation only the
        /// ratios mean something.
        #[arg(long, value_enum)]
        kernel: Option<vm::Kernel>,
    },
    /// Fuzz the datapath against its model for longer than the tests do: generated
    /// frames through the tc programs, frames per second and disagreements reported.
    Fuzz(fuzz::FuzzArgs),
    /// Boot Debian's generic 6.12 and 5.10 kernels (or 6.1, with `--kernel`) with
    /// virtme-ng and run the kernel-dependent tests there (netkit, netlink attach path,
    /// fq_codel), then the package under systemd (`--systemd`).
    VmTest(vm::VmTestArgs),
    /// Build the agent of the release the upgrade tests start from (netiso 0.1.0,
    /// from its commit in this repository's history; cached) and print its path.
    PreviousRelease,
    /// Build the Debian package (target/package/netiso_VERSION_amd64.deb: the binary,
    /// the CNI plugin link, the systemd unit, /etc/default/netiso, man pages, shell
    /// completions, alert rules and dashboard) and check it: contents, the unit,
    /// an install and purge into a scratch root, the installed `--version` and `doctor`.
    Package {
        /// Package the debug build the tests use instead of a release build (a quick
        /// check of the packaging; `cargo xtask test` does this).
        #[arg(long)]
        test_build: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::ensure(),
        Task::Run(args) => run::run(args),
        Task::Test(args) => test::run(args),
        Task::VmTest(args) => vm::run(args),
        Task::Bench {
            which,
            kernel: Some(kernel),
        } => bench::run_in_vm(which, kernel),
        Task::Bench {
            which,
            kernel: None,
        } => bench::run(which),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::PreviousRelease => {
            previous_release::build().map(|path| println!("{}", path.display()))
        }
        Task::Package { test_build } => {
            let binary = if test_build {
                package::Binary::TestBuild
            } else {
                package::Binary::Release
            };
            package::run(binary).map(drop)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
