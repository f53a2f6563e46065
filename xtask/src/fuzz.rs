//! `cargo xtask fuzz`: long runs of the fuzzers: the datapath's (tests/tests/bpf/fuzz.rs),
//! which compares the tc programs with a plain-Rust model on generated frames and
//! prints frames per second and the disagreements (it fails on any), and the parsers'
//! (netiso/tests/unit/parser_fuzz.rs: flags, `--resources`, sizes, durations, ports, ids, API
//! bodies; no panic, every refusal one line).
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
    /// Seed of the generators [default: the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Inputs per parser.
    #[arg(long, default_value_t = 200_000)]
    pub parser_inputs: u64,
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
    )?;
    cmd::run(
        &format!(
            "fuzzing the parsers: {} inputs each, seed {seed}",
            args.parser_inputs
        ),
        cargo()
            .args(["test", "--package", "netiso", "--lib", "config::fuzz"])
            .env("NETISO_PARSER_FUZZ_INPUTS", args.parser_inputs.to_string())
            .env("NETISO_FUZZ_SEED", seed.to_string()),
    )
}
