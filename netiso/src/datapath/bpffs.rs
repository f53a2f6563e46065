//! The BPF filesystem, where maps are pinned so they outlive the agent and `bpftool`
//! can read them.
use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Where the kernel's BPF filesystem is conventionally mounted.
pub const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let stat = statfs(path).map_err(io::Error::from)?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes sure `root` is a directory on a BPF filesystem, mounting bpffs at
/// `/sys/fs/bpf` first if nothing is mounted there (fresh VMs and minimal hosts).
pub fn prepare_pin_root(root: &Path) -> anyhow::Result<()> {
    let mount_point = Path::new(BPFFS_MOUNT_POINT);
    if root.starts_with(mount_point) && !is_bpffs(mount_point).unwrap_or(false) {
        log::info!("mounting the BPF filesystem at {BPFFS_MOUNT_POINT}");
        // Root's alone: whoever can write in bpffs can unpin netiso's links. Made in
        // the host's mount namespace: pins in a sandbox's own bpffs would be lost
        // with the agent, and out of bpftool's sight.
        crate::net::host_mounts::run(|| {
            mount(
                Some("bpf"),
                mount_point,
                Some("bpf"),
                MsFlags::empty(),
                Some("mode=0700"),
            )
            .with_context(|| {
                format!("mounting bpffs at {BPFFS_MOUNT_POINT}; run `mount -t bpf bpf {BPFFS_MOUNT_POINT}` as root")
            })
        })?;
    }
    // Check before creating anything, so a wrong path leaves nothing behind.
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing).with_context(|| format!("checking {}", existing.display()))? {
        bail!(
            "{} is not on a BPF filesystem; choose a --bpffs-root under a bpffs mount such as {BPFFS_MOUNT_POINT}",
            root.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("creating pin directory {}", root.display()))?;
    check_owned_by_root(root)
}

/// Refuses a pin directory someone else could write in: whoever can unpin netiso's
/// links detaches its programs (steering stops, ports go unchecked).
fn check_owned_by_root(root: &Path) -> anyhow::Result<()> {
    let metadata = fs::metadata(root).with_context(|| format!("checking {}", root.display()))?;
    let mode = metadata.permissions().mode() & 0o7777;
    if metadata.uid() != 0 || mode & 0o022 != 0 {
        bail!(
            "pin directory {} belongs to uid {} with mode {mode:o}: others could unpin netiso's programs; remove it (`rm -r {}`) or choose another --bpffs-root",
            root.display(),
            metadata.uid(),
            root.display()
        );
    }
    Ok(())
}
