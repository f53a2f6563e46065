//! `cargo xtask bench`: the benchmarks, in release mode. Figures are printed, never
//! asserted.
use crate::{
    cmd::{self, cargo},
    setup,
};

pub fn run() -> anyhow::Result<()> {
    setup::ensure()?;
    cmd::run(
        "datapath benchmark (BPF_PROG_TEST_RUN)",
        cargo().args(["bench", "--package", "netiso-tests", "--bench", "datapath"]),
    )
}
