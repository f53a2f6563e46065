//! `cargo xtask package`: the Debian package of netiso, built with dpkg-deb from a
//! release build, then checked: its contents, the unit (`systemd-analyze verify` and
//! its sandboxing score), an install into a scratch root with dpkg, and the installed
//! binary's `--version` and `doctor`.
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd::{self, cargo, output, step, workspace_root};

/// The package's name, and the binary's.
const NAME: &str = "netiso";

/// Files the package must hold (besides one man page per subcommand).
const EXPECTED: &[&str] = &[
    "./usr/bin/netiso",
    "./opt/cni/bin/netiso",
    "./lib/systemd/system/netiso.service",
    "./etc/default/netiso",
    "./usr/share/man/man1/netiso.1.gz",
    "./usr/share/man/man1/netiso-agent.1.gz",
    "./usr/share/man/man1/netiso-container-create.1.gz",
    "./usr/share/bash-completion/completions/netiso",
    "./usr/share/zsh/vendor-completions/_netiso",
    "./usr/share/fish/vendor_completions.d/netiso.fish",
    "./usr/share/netiso/prometheus/netiso-alerts.yml",
    "./usr/share/netiso/grafana/netiso.json",
    "./usr/share/doc/netiso/copyright",
    "./usr/share/doc/netiso/README.md",
    "./usr/share/doc/netiso/docs/operating.md",
];

/// Which build of the binary goes into the package.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// A release build (what `cargo xtask package` ships).
    Release,
    /// The debug build the tests already made (`cargo xtask test` checks the
    /// packaging with it rather than spend minutes on a release build: the package's
    /// contents, unit and install do not depend on the optimisation).
    TestBuild,
}

/// Builds the package of the test build, unchecked (the systemd VM installs it).
pub fn build_test_package() -> anyhow::Result<PathBuf> {
    build(Binary::TestBuild)
}

/// Builds the package into `target/package/` and checks it; returns its path.
pub fn run(binary: Binary) -> anyhow::Result<PathBuf> {
    let deb = build(binary)?;
    verify(&deb)?;
    println!("==> package ready: {}", deb.display());
    Ok(deb)
}

fn version() -> anyhow::Result<String> {
    let manifest = fs::read_to_string(workspace_root().join("netiso/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in netiso/Cargo.toml")
}

fn build(binary: Binary) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let built = match binary {
        Binary::Release => {
            cmd::run(
                "building netiso (release)",
                cargo().args(["build", "--release", "--package", NAME, "--bin", NAME]),
            )?;
            root.join("target/release/netiso")
        }
        Binary::TestBuild => root.join("target/debug/netiso"),
    };
    build_from(&built, &version()?)
}

/// Packages the agent binary `built` as netiso `version`, with this tree's unit,
/// maintainer scripts and files (the upgrade tests package the previous release's
/// binary this way).
pub fn build_from(built: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let out = root.join("target/package");
    let stage = out.join(format!("{NAME}_{version}_amd64"));
    step(&format!("staging the package in {}", stage.display()));
    let _ = fs::remove_dir_all(&stage);
    let binary = stage.join("usr/bin/netiso");
    install(built, &binary, 0o755)?;
    output(Command::new("strip").arg("--strip-debug").arg(&binary))
        .context("stripping the binary (binutils)")?;
    // The CNI plugin is the same binary, run by the runtime with CNI_COMMAND set.
    fs::create_dir_all(stage.join("opt/cni/bin"))?;
    symlink("../../../usr/bin/netiso", stage.join("opt/cni/bin/netiso"))?;
    for (from, to) in FILES {
        install(&root.join(from), &stage.join(to), 0o644)?;
    }
    // The README's links lead into docs/, so the pages go beside it.
    for entry in fs::read_dir(root.join("docs")).context("reading docs/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().context("a page without a name")?;
            install(
                &path,
                &stage.join("usr/share/doc/netiso/docs").join(name),
                0o644,
            )?;
        }
    }
    man_pages(&binary, &stage.join("usr/share/man/man1"))?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/netiso"),
        ("zsh", "usr/share/zsh/vendor-completions/_netiso"),
        ("fish", "usr/share/fish/vendor_completions.d/netiso.fish"),
    ] {
        let script = output(Command::new(&binary).args(["completions", shell]))?.stdout;
        write(&stage.join(path), &script, 0o644)?;
    }
    write(
        &stage.join("usr/share/doc/netiso/copyright"),
        COPYRIGHT.as_bytes(),
        0o644,
    )?;
    control(&stage, version)?;
    fs::create_dir_all(&out)?;
    let deb = out.join(format!("{NAME}_{version}_amd64.deb"));
    cmd::run(
        "building the .deb (dpkg-deb)",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// Files installed as they are in the workspace: (source, place in the package).
const FILES: &[(&str, &str)] = &[
    (
        "deploy/systemd/netiso.service",
        "lib/systemd/system/netiso.service",
    ),
    ("deploy/debian/default", "etc/default/netiso"),
    (
        "deploy/prometheus/netiso-alerts.yml",
        "usr/share/netiso/prometheus/netiso-alerts.yml",
    ),
    (
        "deploy/grafana/netiso.json",
        "usr/share/netiso/grafana/netiso.json",
    ),
    ("README.md", "usr/share/doc/netiso/README.md"),
];

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: netiso

Files: *
Copyright: the netiso developers
License: MIT or Apache-2.0
";

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::write(to, bytes).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The man pages from the binary's own CLI definitions, compressed as Debian wants.
fn man_pages(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    output(Command::new(binary).arg("man-pages").arg(dir))?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        // -n: no name or time stamp inside, so builds are reproducible.
        output(Command::new("gzip").args(["-9n", "--force"]).arg(&path))?;
    }
    Ok(())
}

/// DEBIAN/: control, conffiles, the maintainer scripts and md5sums.
fn control(stage: &Path, version: &str) -> anyhow::Result<()> {
    let debian = stage.join("DEBIAN");
    let size_kib = dir_size(stage)? / 1024;
    let control = format!(
        "Package: {NAME}
Version: {version}
Architecture: amd64
Maintainer: netiso developers <netiso@localhost>
Installed-Size: {size_kib}
Depends: libc6 (>= 2.34)
Recommends: bpftool
Section: net
Priority: optional
Homepage: https://localhost/netiso
Description: per-container network isolation and monitoring with eBPF
 netiso gives every container its own network namespace sharing the host's IP
 addresses; each container owns port ranges, and eBPF tc programs steer, filter
 and count every packet by port. The agent manages namespaces, veth pairs and
 rate limits, pins its maps for bpftool and serves per-container statistics
 (JSON and Prometheus). The same binary is the CNI plugin (/opt/cni/bin/netiso).
"
    );
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    write(&debian.join("conffiles"), b"/etc/default/netiso\n", 0o644)?;
    let scripts = workspace_root().join("deploy/debian");
    for script in ["postinst", "prerm", "postrm"] {
        install(&scripts.join(script), &debian.join(script), 0o755)?;
    }
    let sums = output(
        Command::new("sh")
            .arg("-c")
            .arg("find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum")
            .current_dir(stage),
    )?;
    write(&debian.join("md5sums"), &sums.stdout, 0o644)
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Checks the package as a user would meet it.
pub fn verify(deb: &Path) -> anyhow::Result<()> {
    step("checking the package's contents");
    let listing =
        String::from_utf8(output(Command::new("dpkg-deb").arg("--contents").arg(deb))?.stdout)?;
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let missing: Vec<_> = EXPECTED.iter().filter(|p| !paths.contains(p)).collect();
    ensure!(missing.is_empty(), "the package lacks {missing:?}");
    let binary_line = listing
        .lines()
        .find(|l| l.ends_with(" ./usr/bin/netiso"))
        .unwrap_or_default();
    ensure!(
        binary_line.starts_with("-rwxr-xr-x root/root"),
        "the binary is not root's and executable: {binary_line}"
    );
    ensure!(
        listing.contains("./opt/cni/bin/netiso -> ../../../usr/bin/netiso"),
        "the CNI plugin is not a link to the binary"
    );
    let fields =
        String::from_utf8(output(Command::new("dpkg-deb").arg("--field").arg(deb))?.stdout)?;
    for field in ["Package: netiso", "Architecture: amd64", "Version: "] {
        ensure!(fields.contains(field), "the control file lacks {field}");
    }
    println!("    {} files, control fields present", paths.len());

    step("installing it with dpkg into a scratch root");
    let scratch = tempdir("netiso-package-root")?;
    let admin = scratch.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info"))?;
    fs::create_dir_all(admin.join("updates"))?;
    fs::write(admin.join("status"), "")?;
    output(scratch_dpkg(&scratch).arg("-i").arg(deb)).context("dpkg -i into the scratch root")?;
    let status = fs::read_to_string(admin.join("status"))?;
    ensure!(
        status.contains("Package: netiso\nStatus: install ok installed"),
        "dpkg does not list netiso as installed:\n{status}"
    );
    let installed = scratch.join("usr/bin/netiso");
    let version_line =
        String::from_utf8(output(Command::new(&installed).arg("--version"))?.stdout)?;
    ensure!(
        version_line.trim() == format!("netiso {}", version()?),
        "`netiso --version` printed {version_line:?}"
    );
    println!("    installed; {}", version_line.trim());
    let doctor = Command::new(&installed)
        .arg("doctor")
        .output()
        .context("running the installed netiso doctor")?;
    let report = String::from_utf8_lossy(&doctor.stdout);
    print!("{}", indent(&report));
    ensure!(
        doctor.status.success() && report.contains("kernel"),
        "the installed `netiso doctor` failed ({}): {}",
        doctor.status,
        String::from_utf8_lossy(&doctor.stderr)
    );
    let completion = scratch.join("usr/share/bash-completion/completions/netiso");
    output(Command::new("bash").arg("-n").arg(&completion))
        .context("the bash completion script does not parse")?;
    let cni = scratch.join("opt/cni/bin/netiso");
    ensure!(
        fs::canonicalize(&cni)? == fs::canonicalize(&installed)?,
        "{} does not lead to the binary",
        cni.display()
    );

    step("checking the systemd unit");
    let unit = scratch.join("lib/systemd/system/netiso.service");
    // The targets it is ordered against are systemd's own: bring this system's units
    // into the scratch root, where ExecStart= finds the installed binary.
    output(
        Command::new("cp")
            .args(["-r", "--no-clobber", "/lib/systemd/system/."])
            .arg(scratch.join("lib/systemd/system")),
    )
    .context("copying systemd's units into the scratch root")?;
    let verify = Command::new("systemd-analyze")
        .arg(format!("--root={}", scratch.display()))
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .context("running systemd-analyze (the systemd package)")?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    ensure!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify found problems in the unit ({}):\n{complaints}",
        verify.status
    );
    println!("    systemd-analyze verify: clean");
    let security = Command::new("systemd-analyze")
        .arg(format!("--root={}", scratch.display()))
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()?;
    let summary = String::from_utf8_lossy(&security.stdout);
    let score = summary
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no exposure level reported")
        .trim()
        .to_owned();
    println!("    systemd-analyze security: {score}");
    if score.contains("UNSAFE") || score.contains("EXPOSED") {
        bail!("the unit's sandboxing is weak: {score}");
    }

    step("removing it again with dpkg --purge");
    output(scratch_dpkg(&scratch).args(["--purge", NAME]))
        .context("dpkg --purge in the scratch root")?;
    ensure!(
        !installed.exists() && !scratch.join("etc/default/netiso").exists(),
        "files left after purge"
    );
    let _ = fs::remove_dir_all(&scratch);
    println!("    purged: nothing left");
    Ok(())
}

/// dpkg working on the scratch root `root`. Chrootless: the scratch root has no shell
/// to run the maintainer scripts in; they see DPKG_ROOT and leave the running system
/// alone. Its empty package database has no libc6 either: the dependency is this
/// system's.
fn scratch_dpkg(root: &Path) -> Command {
    let mut dpkg = Command::new("dpkg");
    dpkg.arg(format!("--root={}", root.display())).args([
        "--force-script-chrootless",
        "--force-depends",
        "--no-triggers",
    ]);
    dpkg
}

fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
