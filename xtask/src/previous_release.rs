//! The release the upgrade tests start from, built from its commit in this
//! repository's history: the lab runs it, then upgrades it in place to the working
//! tree's agent (`tests/tests/lab/upgrade.rs`).
use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, step, workspace_root};

/// netiso 0.1.0, the last commit before pinned state carried a layout version
/// (layout 1). The one place this commit is named.
pub const COMMIT: &str = "3b701a36712c65792b66029a257e715a3b72c98a";

/// Its version, as its package is numbered.
pub const VERSION: &str = "0.1.0";

/// The variable that tells the tests where the previous release's agent is.
pub const BIN_VARIABLE: &str = "NETISO_PREVIOUS_BIN";

/// Where the previous release's agent is built: in the user's cache, not in
/// `target/`, so a fresh clone on the same machine finds it built.
fn build_dir() -> PathBuf {
    cmd::cache_dir()
        .join("previous-release")
        .join(&COMMIT[..12])
}

/// Builds the previous release's agent (a debug build, about two minutes the first
/// time; then cached) and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    let dir = build_dir();
    let binary = dir.join("netiso");
    if binary.exists() {
        return Ok(binary);
    }
    let root = workspace_root();
    let known = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])
        .status()
        .is_ok_and(|s| s.success());
    if !known {
        bail!(
            "commit {COMMIT} (netiso 0.1.0, the release the upgrade tests start from) is not in this repository's history; clone it whole (not --depth)"
        );
    }
    let source = dir.join("source");
    let _ = fs::remove_dir_all(&source);
    fs::create_dir_all(&source).with_context(|| format!("creating {}", source.display()))?;
    step(&format!(
        "unpacking netiso 0.1.0 ({}) into {}",
        &COMMIT[..12],
        source.display()
    ));
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["archive", "--format=tar", COMMIT])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting git archive")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&source)
        .stdin(archive.stdout.take().context("git archive's output")?)
        .status()
        .context("starting tar")?;
    if !archive.wait()?.success() || !tar.success() {
        bail!("unpacking commit {COMMIT} failed");
    }
    let target = dir.join("target");
    let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--locked", "--package", "netiso", "--bins"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &target);
    for var in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "RUSTFLAGS"] {
        cargo.env_remove(var);
    }
    cmd::run(
        "building the netiso 0.1.0 agent for the upgrade tests (about two minutes, once)",
        &mut cargo,
    )?;
    let partial = dir.join("netiso.partial");
    fs::copy(target.join("debug/netiso"), &partial).context("copying the built agent")?;
    // Renamed last: an interrupted build is never taken for a finished one.
    fs::rename(&partial, &binary)?;
    let _ = fs::remove_dir_all(&target);
    let _ = fs::remove_dir_all(&source);
    Ok(binary)
}
