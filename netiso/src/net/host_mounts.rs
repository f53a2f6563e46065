//! Mounts the whole host must see: named namespaces under `/run/netns` (which
//! runtimes, `ip netns` and the CNI plugin open) and the BPF filesystem.
//!
//! A service manager's sandbox (systemd's `ProtectSystem=strict`) runs the agent in a
//! mount namespace of its own whose mounts do not propagate back to the host: a
//! namespace bind-mounted there would exist for the agent alone. So where the agent's
//! mount namespace is not the host's (`--host-mount-namespace`, PID 1's by default),
//! these mounts are made on a thread that has entered the host's; everything else the
//! agent does stays inside its sandbox.
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    sync::OnceLock,
    thread,
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns, unshare};

const OWN_MOUNT_NAMESPACE: &str = "/proc/self/ns/mnt";
/// The default `--host-mount-namespace`.
pub const PID1_MOUNT_NAMESPACE: &str = "/proc/1/ns/mnt";

/// The host's mount namespace when the agent is outside it; unset or `None`: inside.
static HOST_NAMESPACE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Finds out, once at start, whether the agent runs outside the host's mount namespace
/// `host`. PID 1's that cannot be read (a container without CAP_SYS_PTRACE on PID 1)
/// counts as the agent's own; a namespace named explicitly must be readable.
pub fn configure(host: &Path) -> anyhow::Result<()> {
    let own = fs::read_link(OWN_MOUNT_NAMESPACE).context("reading the agent's mount namespace")?;
    let outside = match fs::read_link(host) {
        Ok(target) if target.to_string_lossy().starts_with("mnt:") => target != own,
        Ok(_) => bail!(
            "{} is not a mount namespace; pass --host-mount-namespace a file like /proc/PID/ns/mnt",
            host.display()
        ),
        Err(_) if host == Path::new(PID1_MOUNT_NAMESPACE) => false,
        Err(e) => bail!(
            "cannot read the mount namespace {}: {e}; pass --host-mount-namespace one the agent may open",
            host.display()
        ),
    };
    if outside {
        log::info!(
            "the agent runs in a mount namespace of its own: namespace names and bpffs are mounted in {}",
            host.display()
        );
    }
    let _ = HOST_NAMESPACE.set(outside.then(|| host.to_owned()));
    Ok(())
}

/// Runs `f` in the host's mount namespace: here if the agent is in it, else on a
/// thread that has entered it.
pub fn run<R: Send>(f: impl FnOnce() -> anyhow::Result<R> + Send) -> anyhow::Result<R> {
    let Some(Some(host)) = HOST_NAMESPACE.get() else {
        return f();
    };
    thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(host).with_context(|| {
                    format!(
                        "entering the host's mount namespace {} (the agent needs CAP_SYS_ADMIN and CAP_SYS_CHROOT)",
                        host.display()
                    )
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn enter(host: &Path) -> io::Result<()> {
    let host = File::open(host)?;
    // A thread sharing its filesystem context (root, cwd) with others may not change
    // mount namespace: give this one its own first.
    unshare(CloneFlags::CLONE_FS)?;
    setns(&host, CloneFlags::CLONE_NEWNS)?;
    Ok(())
}
