//! `cargo xtask bench [datapath|traffic|scale|soak|cni|upgrade|fuzz]`: the benchmarks, in release mode, and
//! the long forms of the soak and fuzz tests. Figures are printed, never asserted (the
//! soak does check that nothing leaked, the fuzzers that nothing disagreed).
use clap::ValueEnum;

use crate::{
    cmd::{self, cargo},
    previous_release, setup, vm,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    /// Per-packet cost of the tc programs (BPF_PROG_TEST_RUN) against the number of
    /// containers.
    Datapath,
    /// Real traffic (iperf3) through netiso, a routed namespace, Mesos's u32 chain and
    /// no container, with 1 to 4096 containers present (about 20 minutes).
    Traffic,
    /// Up to 1000 real containers through the control API: create and destroy
    /// latency, the agent's memory and descriptors, scrape times (a few minutes;
    /// NETISO_SCALE_CONTAINERS=N for another count).
    Scale,
    /// 10 000 create/destroy cycles under traffic: latency p50/p99, memory and
    /// descriptors before and after, leaks (about half an hour;
    /// NETISO_SOAK_CYCLES=N for fewer).
    Soak,
    /// ADD and DEL latency of the CNI plugin, the plugin process included.
    Cni,
    /// The previous release (netiso 0.1.0) upgraded in place under TCP and UDP
    /// streams with 1, 100 and 1000 containers: bytes and datagrams lost, time to the
    /// first answered create, memory (NETISO_UPGRADE_CONTAINERS=1,100 for others).
    Upgrade,
    /// The fuzzers' long runs: a million frames through the datapath and its model,
    /// 200 000 inputs per parser (`cargo xtask fuzz` with its defaults).
    Fuzz,
}

/// Runs the traffic benchmark (the only one that means something under emulation,
/// as ratios) in a VM booting `kernel`.
pub fn run_in_vm(which: Option<Bench>, kernel: vm::Kernel) -> anyhow::Result<()> {
    if which != Some(Bench::Traffic) {
        anyhow::bail!(
            "only the traffic benchmark runs in a VM (`cargo xtask bench traffic --kernel {}`): the others measure this machine's kernel",
            kernel.name()
        );
    }
    setup::ensure()?;
    cmd::run(
        "building the netiso agent (release)",
        cargo().args(["build", "--release", "--package", "netiso", "--bins"]),
    )?;
    let binary = cmd::bench_binary("traffic")?;
    vm::run_bench(
        kernel,
        &binary,
        &cmd::workspace_root().join("target/release/netiso"),
    )
}

/// Runs `which`, or every benchmark.
pub fn run(which: Option<Bench>) -> anyhow::Result<()> {
    setup::ensure()?;
    if which.is_none_or(|b| b == Bench::Datapath) {
        cmd::run(
            "datapath benchmark (BPF_PROG_TEST_RUN)",
            cargo().args(["bench", "--package", "netiso-tests", "--bench", "datapath"]),
        )?;
    }
    for (bench, name, what) in [
        (
            Bench::Traffic,
            "traffic",
            "traffic benchmark (iperf3 through five setups)",
        ),
        (
            Bench::Scale,
            "scale",
            "scale benchmark (a real agent and up to 1000 containers)",
        ),
        (
            Bench::Soak,
            "soak",
            "soak (create/destroy cycles under traffic through the control API)",
        ),
        (
            Bench::Cni,
            "cni",
            "CNI plugin latency (ADD and DEL, the plugin process included)",
        ),
        (
            Bench::Upgrade,
            "upgrade",
            "upgrade in place from the previous release, under traffic",
        ),
    ] {
        if which.is_none_or(|b| b == bench) {
            let mut bench_command = cargo();
            if bench == Bench::Upgrade {
                bench_command.env(previous_release::BIN_VARIABLE, previous_release::build()?);
            }
            // The benchmark runs the release agent, found next to itself.
            cmd::run(
                "building the netiso agent (release)",
                cargo().args(["build", "--release", "--package", "netiso", "--bins"]),
            )?;
            cmd::run(
                what,
                bench_command.args(["bench", "--package", "netiso-tests", "--bench", name]),
            )?;
        }
    }
    if which.is_none_or(|b| b == Bench::Fuzz) {
        crate::fuzz::run(&crate::fuzz::FuzzArgs {
            frames: 1_000_000,
            seed: None,
            parser_inputs: 200_000,
        })?;
    }
    Ok(())
}
