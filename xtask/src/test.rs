//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.
use std::time::Instant;

use clap::Args;

use crate::{
    cmd::{self, build_test_agent, cargo, nightly_cargo, workspace_root},
    package, previous_release, setup, vm,
};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip the VM tests (they boot Debian 12's backported 6.12 and 11's 5.10 under
    /// emulation, side by side, each running what its kernel changes, then a systemd VM:
    /// about 20 minutes).
    #[arg(long)]
    pub no_vm: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::ensure()?;
    cmd::run(
        "rustfmt check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    // Clippy reads no eBPF object: AYA_BUILD_SKIP spares it a build of the programs
    // (about a minute) that the agent's build makes again anyway.
    cmd::run(
        "clippy on the userspace crates",
        cargo().env("AYA_BUILD_SKIP", "1").args([
            "clippy",
            "--workspace",
            "--exclude",
            "netiso-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // From inside the crate, its .cargo/config.toml selects the BPF target and
    // build-std, as in the aya template.
    cmd::run(
        "clippy on the eBPF crate (nightly, bpfel-unknown-none)",
        nightly_cargo()
            .current_dir(workspace_root().join("netiso-ebpf"))
            .args(["clippy", "--", "-D", "warnings"]),
    )?;
    build_test_agent()?;
    let previous = previous_release::build()?;
    cmd::run(
        "unit, BPF test-run and lab tests on this kernel",
        cargo()
            .env(previous_release::BIN_VARIABLE, &previous)
            .args([
                "test",
                "--workspace",
                "--exclude",
                "netiso-ebpf",
                "--no-fail-fast",
            ]),
    )?;
    package::run(package::Binary::TestBuild)?;
    if args.no_vm {
        println!("==> VM tests skipped (--no-vm)");
    } else {
        vm::run(vm::VmTestArgs::default())?;
    }
    println!(
        "==> all checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
