//! The VM with systemd as PID 1 (`cargo xtask vm-test --systemd`), where the Debian
//! package runs as a real service (`tests/tests/systemd/`): a Debian 12 root file
//! system built from the Debian archive with mmdebstrap (with its own 6.1 kernel and
//! initramfs; cached), booted by qemu under emulation as a disk whose writes are
//! thrown away, with the test's files shared over 9p. A unit in the image runs the
//! test once the system is up, then powers the VM off.
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output, step, workspace_root};

/// Raise when the packages or the files written into the image change: the cached
/// image is then built again.
const IMAGE_VERSION: u32 = 1;

/// What the image holds beyond Debian's essential packages, and why.
const PACKAGES: &[&str] = &[
    // systemd as PID 1, and what a booted Debian system has.
    "systemd-sysv",
    "udev",
    "kmod",
    // Its kernel and initramfs (Debian's virtio drivers are modules).
    "linux-image-amd64",
    "iproute2",
    // The CNI client, its runtime and reference plugins.
    "podman",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "netcat-openbsd",
    // The operating guide's commands and the inventory after removal.
    "jq",
    "bpftool",
    "procps",
];

/// Where the guest sees the shared directory.
const GUEST_SHARE: &str = "/mnt/netiso";

/// Most time the VM may take: boot, the test, power off.
const VM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The booted image's parts.
struct Image {
    disk: PathBuf,
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

/// The image under `cache`, built first if needed.
fn image(cache: &Path) -> anyhow::Result<Image> {
    let dir = cache.join(format!("debian12-systemd-{IMAGE_VERSION}"));
    let image = Image {
        disk: dir.join("disk.img"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    if image.disk.exists() {
        return Ok(image);
    }
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let root = partial.join("root");
    cmd::run(
        "building a Debian 12 root file system with systemd from the Debian archive (mmdebstrap, about three minutes, once)",
        Command::new("mmdebstrap")
            .args(["--variant=apt", "--quiet"])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg("bookworm")
            .arg(&root),
    )?;
    configure(&root)?;
    let boot = root.join("boot");
    for (prefix, to) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
        let found = fs::read_dir(&boot)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .with_context(|| format!("the image has no /boot/{prefix}*"))?;
        fs::copy(&found, partial.join(to))?;
    }
    let disk = partial.join("disk.img");
    output(Command::new("truncate").args(["-s", "4G"]).arg(&disk))?;
    cmd::run(
        "making it a disk image (mkfs.ext4 -d)",
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "netiso-root", "-d"])
            .arg(&root)
            .arg(&disk),
    )?;
    fs::remove_dir_all(&root)?;
    // Renamed last: an interrupted build is never taken for a finished one.
    fs::rename(&partial, &dir)?;
    Ok(image)
}

/// The image's own files: its root and the share in fstab, a name, and the unit that
/// runs the test (the share's `guest.sh`) once the system is up, then powers off.
fn configure(root: &Path) -> anyhow::Result<()> {
    fs::write(root.join("etc/hostname"), "netiso-vm\n")?;
    fs::write(
        root.join("etc/fstab"),
        format!(
            "/dev/vda / ext4 rw,errors=remount-ro 0 1\n\
             netiso {GUEST_SHARE} 9p trans=virtio,version=9p2000.L,msize=512000 0 0\n"
        ),
    )?;
    fs::create_dir_all(root.join(GUEST_SHARE.trim_start_matches('/')))?;
    let units = root.join("etc/systemd/system");
    fs::write(
        units.join("netiso-vm-test.service"),
        format!(
            "[Unit]\n\
             Description=netiso's tests under systemd, then power off\n\
             After=multi-user.target\n\
             RequiresMountsFor={GUEST_SHARE}\n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=/bin/sh {GUEST_SHARE}/guest.sh\n\
             ExecStopPost=/bin/systemctl poweroff --no-block\n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        ),
    )?;
    let wants = units.join("multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    symlink(
        "/etc/systemd/system/netiso-vm-test.service",
        wants.join("netiso-vm-test.service"),
    )?;
    Ok(())
}

/// What the guest runs: `test_binary` with the packages, the operating guide and where to
/// write the inventory.
pub struct GuestFiles<'a> {
    pub test_binary: &'a Path,
    pub previous_deb: &'a Path,
    pub new_deb: &'a Path,
}

/// Boots the image with the test's files shared and returns (log, status, seconds,
/// the shared directory).
pub fn boot_and_test(
    cache: &Path,
    files: &GuestFiles,
) -> anyhow::Result<(String, String, f64, PathBuf)> {
    let image = image(cache)?;
    let out_dir = workspace_root().join("target/vm-test-systemd");
    let _ = fs::remove_dir_all(&out_dir);
    fs::create_dir_all(&out_dir)?;
    let mut shared = Vec::new();
    for (from, name) in [
        (files.test_binary, "systemd-tests"),
        (files.previous_deb, "previous.deb"),
        (files.new_deb, "new.deb"),
        (&workspace_root().join("docs/operating.md"), "operating.md"),
    ] {
        fs::copy(from, out_dir.join(name))
            .with_context(|| format!("copying {} for the VM", from.display()))?;
        shared.push(format!("{GUEST_SHARE}/{name}"));
    }
    fs::write(
        out_dir.join("guest.sh"),
        format!(
            "# Runs in the VM as a service once systemd is up; {GUEST_SHARE} is shared.\n\
             export NETISO_IN_VM=1 RUST_BACKTRACE=1 \\\n\
             \x20 NETISO_PACKAGE_PREVIOUS={previous} NETISO_PACKAGE_NEW={new} \\\n\
             \x20 NETISO_OPERATING_GUIDE={guide} NETISO_INVENTORY={GUEST_SHARE}/inventory.txt\n\
             echo \"kernel $(uname -r) with $(cat /proc/1/comm) as PID 1\" > {GUEST_SHARE}/tests.log\n\
             {binary} --ignored --test-threads=1 --show-output >> {GUEST_SHARE}/tests.log 2>&1\n\
             echo $? > {GUEST_SHARE}/status\n\
             journalctl --no-pager -o short-monotonic > {GUEST_SHARE}/journal.txt\n",
            binary = shared[0],
            previous = shared[1],
            new = shared[2],
            guide = shared[3],
        ),
    )?;
    step(&format!(
        "booting Debian 12 with systemd as PID 1 ({}) under emulation and testing the package there",
        image.disk.display()
    ));
    let started = Instant::now();
    let console = fs::File::create(out_dir.join("console.log"))?;
    let status = Command::new("timeout")
        .arg(VM_TIMEOUT.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "3G", "-smp", "2"])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 quiet"])
        // snapshot: the cached image stays as built.
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            image.disk.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=netiso,security_model=none,id=netiso",
            out_dir.display()
        ))
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .stdin(std::process::Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .status()
        .context("starting qemu-system-x86_64")?;
    let log = fs::read_to_string(out_dir.join("tests.log")).unwrap_or_default();
    let test_status = fs::read_to_string(out_dir.join("status")).unwrap_or_default();
    if test_status.trim().is_empty() {
        bail!(
            "the systemd VM did not finish its test (qemu {status}, after {:.0}s); its console is in {}",
            started.elapsed().as_secs_f64(),
            out_dir.join("console.log").display()
        );
    }
    if let Ok(inventory) = fs::read_to_string(out_dir.join("inventory.txt")) {
        println!("    after dpkg --purge and docs/operating.md's \"Removing everything\":");
        for line in inventory.lines() {
            println!("      {line}");
        }
    }
    Ok((log, test_status, started.elapsed().as_secs_f64(), out_dir))
}
