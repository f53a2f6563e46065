//! `cargo xtask fuzz`: a long run of the datapath fuzzer (tests/tests/bpf/fuzz.rs),
//! which compares the tc programs with a plain-Rust model on generated frames. The
//! test run prints frames per second and the disagreements (it fails on any).
use clap::Args;

use crate::{
    cmd::{self, cargo},
    setup,
};

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Frames to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,
    /// Seed of the generator [default: the clock].
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    setup::ensure()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    cmd::run(
        &format!("fuzzing the datapath: {} frames, seed {seed}", args.frames),
        cargo()
            .args(["test", "--package", "netiso-tests", "--test", "bpf", "--"])
            .args([
                "--exact",
                "fuzz::the_datapath_agrees_with_its_model_on_generated_frames",
            ])
            .arg("--nocapture")
            .env("NETISO_FUZZ_FRAMES", args.frames.to_string())
            .env("NETISO_FUZZ_SEED", seed.to_string()),
    )
}
