//! Failpoints: named places between the kernel operations of create, update and
//! destroy where the tests make the agent fail, so that every fault is tried. They
//! exist only in builds with the `failpoints` feature (the tests' build); elsewhere
//! [`hit`] is empty and costs nothing.
//!
//! `NETISO_FAILPOINTS=NAME=ACTION[,NAME=ACTION…]`, where ACTION is `error` (the step
//! fails), `panic` (the thread panics) or `crash` (the process is killed with
//! SIGKILL, as by the OOM killer or a power cut). `NAME` may end in `*` to match a
//! prefix. `NETISO_FAILPOINTS_FILE=PATH` names a file holding the same, read at every
//! failpoint, so that a test can arm and disarm them in a running agent.

/// The failpoints of `container create`, in the order they are passed.
pub const CREATE: &[&str] = &[
    "create.netns",
    "create.veth",
    "create.inside",
    "create.addresses",
    "create.datapath",
    "create.attach",
    "create.attach_inside",
    "create.shape",
    "create.record",
    "create.done",
];
/// The failpoints of `container update`, in order.
pub const UPDATE: &[&str] = &[
    "update.ports",
    "update.shape",
    "update.record",
    "update.done",
];
/// The failpoints of `container destroy` in an adopted namespace, in order.
pub const DESTROY: &[&str] = &[
    "destroy.datapath",
    "destroy.veth",
    "destroy.sysctls",
    "destroy.netns",
    "destroy.record",
];
/// The failpoints of `container destroy` in a namespace the agent made, in order (no
/// sysctls to put back; the veth pair is queued for deletion after the name goes).
pub const DESTROY_MADE_NAMESPACE: &[&str] = &[
    "destroy.datapath",
    "destroy.netns",
    "destroy.veth",
    "destroy.record",
];

/// The failpoints of an upgrade of older pinned state, in order: the new maps
/// filled, the public interface's programs swapped (the others not yet), every
/// program swapped and the counters carried (the pins not yet moved in).
pub const UPGRADE: &[&str] = &["upgrade.filled", "upgrade.swapping", "upgrade.swapped"];

/// Fails as the environment says if failpoint `name` is armed (test builds only).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) -> anyhow::Result<()> {
    let armed = match std::env::var_os("NETISO_FAILPOINTS_FILE") {
        Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
        None => std::env::var("NETISO_FAILPOINTS").unwrap_or_default(),
    };
    for (pattern, action) in armed
        .split([',', '\n'])
        .filter_map(|p| p.trim().split_once('='))
    {
        let matches = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        };
        if !matches {
            continue;
        }
        log::warn!("failpoint {name}: {action}");
        match action {
            "error" => anyhow::bail!("failpoint {name}"),
            "panic" => panic!("failpoint {name}"),
            "crash" => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
            other => log::warn!("failpoint {name}: unknown action {other}"),
        }
    }
    Ok(())
}

/// Failpoints are compiled out of this build.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
#[allow(clippy::unnecessary_wraps)]
pub fn hit(_name: &str) -> anyhow::Result<()> {
    Ok(())
}
