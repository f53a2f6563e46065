//! `cargo xtask bench [datapath|stats]`: the benchmarks, in release mode. Figures are
//! printed, never asserted.
use clap::ValueEnum;

use crate::{
    cmd::{self, cargo},
    setup,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    /// Per-packet cost of the tc programs (BPF_PROG_TEST_RUN) against the number of
    /// containers.
    Datapath,
    /// Time of a statistics scrape and the agent's memory, with up to 1000 real
    /// containers (a few minutes).
    Stats,
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
    if which.is_none_or(|b| b == Bench::Stats) {
        // The benchmark runs the release agent, found next to itself.
        cmd::run(
            "building the netiso agent (release)",
            cargo().args(["build", "--release", "--package", "netiso", "--bins"]),
        )?;
        cmd::run(
            "statistics benchmark (a real agent and up to 1000 containers)",
            cargo().args([
                "bench",
                "--package",
                "netiso-tests",
                "--bench",
                "statistics",
            ]),
        )?;
    }
    Ok(())
}
