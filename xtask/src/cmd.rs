//! Running commands with a visible step line, and the workspace's paths.
use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// Where xtask keeps what it builds or downloads once per machine (kernels, images,
/// the previous release): `$NETISO_CACHE`, or `~/.cache/netiso`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NETISO_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/netiso")
        },
        PathBuf::from,
    )
}

/// A `cargo` command for the stable toolchain, run from the workspace root.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// A `cargo` command for the nightly toolchain (the eBPF crate), without the variables
/// the outer cargo set for the stable toolchain.
pub fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo"])
        .current_dir(workspace_root());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        command.env_remove(var);
    }
    command
}

/// Prints a step header.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// Runs `command` with inherited output; fails with `what` if it fails.
pub fn run(what: &str, command: &mut Command) -> anyhow::Result<()> {
    step(what);
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("{what}: could not start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    println!("    {what}: ok in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `command` capturing its output; fails with its stderr if it fails.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Whether `program --version` runs.
pub fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The lab tests start the real `netiso` binary, which `cargo test` alone does not build.
pub fn build_agent() -> anyhow::Result<()> {
    run(
        "building the netiso agent",
        cargo().args(["build", "--package", "netiso", "--bins"]),
    )
}

/// Builds the agent the tests run: with failpoints (`netiso/src/failpoints.rs`), as
/// `cargo test --workspace` builds it, so that the tests do not rebuild it.
pub fn build_test_agent() -> anyhow::Result<()> {
    run(
        "building the netiso agent with failpoints",
        cargo().args([
            "build",
            "--package",
            "netiso",
            "--bins",
            "--features",
            "failpoints",
        ]),
    )
}

/// Builds the benchmark `name` of the test package (release) and returns its binary.
pub fn bench_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    step(&format!("building the {name} benchmark"));
    let built = output(cargo().args([
        "bench",
        "--package",
        "netiso-tests",
        "--bench",
        name,
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]))?;
    String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name)
        .find_map(|msg| msg["executable"].as_str().map(std::path::PathBuf::from))
        .with_context(|| format!("cargo built no {name} benchmark"))
}
