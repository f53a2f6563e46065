//! Installs what the build and the tests need, and only what is missing: Debian
//! packages, rust-src for nightly, bpf-linker built against LLVM 22, and from PyPI
//! virtme-ng and prometheus-client (the tests parse `/metrics` with its parser).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output, step, works};

/// Debian packages the project uses, and why.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links against LLVM 22, the nightly's LLVM",
    ),
    ("iproute2", "ip and tc for the lab namespaces"),
    ("iputils-ping", "ping in lab tests"),
    ("iputils-arping", "arping in lab tests"),
    ("netcat-openbsd", "nc servers in lab tests"),
    ("iperf3", "TCP streams in lab tests"),
    ("bpftool", "inspecting pinned maps"),
    ("tcpdump", "debugging lab traffic"),
    (
        "qemu-system-x86",
        "the VM that runs the tests on a second kernel",
    ),
    (
        "kmod",
        "depmod, which virtme-ng runs on the VM kernel's modules",
    ),
    ("busybox-static", "the VM's initramfs"),
    ("python3-pip", "installing virtme-ng and prometheus-client"),
    (
        "prometheus",
        "a real Prometheus scrapes the agent in the tests; promtool checks the alert rules",
    ),
    (
        "systemd",
        "systemd-analyze checks the packaged unit (cargo xtask package)",
    ),
    ("binutils", "strip for the packaged binary"),
    ("tmux", "a terminal for netiso top in the tests"),
    ("podman", "a real CNI client in the CNI tests"),
    (
        "runc",
        "podman's runtime here (crun fails: cgroups in hybrid mode are not supported)",
    ),
    (
        "containernetworking-plugins",
        "the reference CNI plugins podman's CNI backend looks for",
    ),
    (
        "containerd",
        "ctr run --cni, the second real CNI client in the CNI tests",
    ),
    (
        "mmdebstrap",
        "builds the Debian 12 root file system of the VM with systemd as PID 1",
    ),
    (
        "e2fsprogs",
        "mkfs.ext4 makes that root file system a disk image",
    ),
];

/// The nightly toolchain that builds the eBPF crate. It is preinstalled and must not be
/// updated: a newer one moves to LLVM 23, which breaks bpf-linker built for LLVM 22.
const NIGHTLY: &str = "nightly";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Checks everything and installs what is missing.
pub fn ensure() -> anyhow::Result<()> {
    let missing_packages = missing_apt_packages()?;
    let need_rust_src = !nightly_has_rust_src()?;
    let need_bpf_linker = !works("bpf-linker", &["--version"]);
    let need_vng = vng().is_none();
    let need_prometheus_parser = !works("python3", &["-c", "import prometheus_client"]);
    if missing_packages.is_empty()
        && !need_rust_src
        && !need_bpf_linker
        && !need_vng
        && !need_prometheus_parser
    {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("tools are missing and installing them needs root; run `sudo -E cargo xtask setup`");
    }
    if !missing_packages.is_empty() {
        install_apt_packages(&missing_packages)?;
    }
    if need_rust_src {
        cmd::run(
            "adding rust-src to the nightly toolchain (for -Z build-std=core)",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
        )?;
    }
    if need_bpf_linker {
        cmd::run(
            "building bpf-linker against LLVM 22 (about a minute)",
            cmd::cargo()
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                // Tell bpf-linker's and llvm-sys's build scripts where Debian's LLVM is.
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        )?;
        if !works("bpf-linker", &["--version"]) {
            bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
        }
    }
    if need_vng {
        pip_install("virtme-ng", "runs the VM tests")?;
        if vng().is_none() {
            bail!(
                "virtme-ng was installed but `vng` cannot be found; add Python's scripts directory to PATH"
            );
        }
    }
    if need_prometheus_parser {
        pip_install(
            "prometheus-client",
            "the tests parse /metrics with its parser",
        )?;
    }
    println!("==> setup complete");
    Ok(())
}

fn missing_apt_packages() -> anyhow::Result<Vec<&'static str>> {
    if !Path::new("/etc/debian_version").exists() {
        // Not Debian-like: only fail if the tools themselves are absent.
        let tools = [
            "ip",
            "ping",
            "nc",
            "iperf3",
            "bpftool",
            "qemu-system-x86_64",
        ];
        let absent: Vec<_> = tools.iter().filter(|t| which(t).is_none()).collect();
        if absent.is_empty() {
            return Ok(Vec::new());
        }
        bail!(
            "this is not a Debian-like system, so setup cannot install {absent:?}; install them with your package manager (and LLVM 22 for bpf-linker)"
        );
    }
    let names: Vec<&str> = APT_PACKAGES.iter().map(|(name, _)| *name).collect();
    // dpkg-query exits non-zero when some package is unknown; read its output anyway.
    let query = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(&names)
        .output()
        .context("running dpkg-query")?;
    let stdout = String::from_utf8_lossy(&query.stdout);
    Ok(names
        .into_iter()
        .filter(|name| {
            !stdout
                .lines()
                .any(|line| line == format!("{name} installed"))
        })
        .collect())
}

fn install_apt_packages(packages: &[&str]) -> anyhow::Result<()> {
    for (name, why) in APT_PACKAGES.iter().filter(|(n, _)| packages.contains(n)) {
        println!("    missing {name}: {why}");
    }
    cmd::run(
        "updating the apt package lists",
        Command::new("apt-get").args(["update", "-q"]),
    )
    .context("apt-get update failed; is the network to the Debian mirror reachable?")?;
    cmd::run(
        &format!("installing {}", packages.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn nightly_has_rust_src() -> anyhow::Result<bool> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF crate with nightly")?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        bail!(
            "no nightly toolchain; this machine should have nightly 2026-05-19 (LLVM 22) preinstalled. Do not install a newer one: it uses LLVM 23, which bpf-linker here cannot read"
        );
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    Ok(String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src")))
}

fn pip_install(package: &str, why: &str) -> anyhow::Result<()> {
    let pip = |extra: &[&str]| {
        let mut command = Command::new("python3");
        command
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(extra)
            .arg(package);
        command
    };
    step(&format!("installing {package} ({why}) with pip"));
    let first = pip(&[]).output().context("running python3 -m pip")?;
    if !first.status.success() {
        // Debian's own Python refuses system-wide pip installs unless told otherwise.
        cmd::run(
            &format!("installing {package} into the system Python"),
            &mut pip(&["--break-system-packages"]),
        )?;
    }
    // pyenv shims appear only after a rehash; harmless elsewhere.
    let _ = Command::new("pyenv").arg("rehash").status();
    Ok(())
}

/// Finds `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The `vng` command of virtme-ng: on PATH, or in Python's scripts directory.
pub fn vng() -> Option<PathBuf> {
    let found = which("vng").or_else(|| {
        let scripts = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim());
        Some(dir.join("vng")).filter(|p| p.is_file())
    })?;
    works(found.to_str()?, &["--version"]).then_some(found)
}
