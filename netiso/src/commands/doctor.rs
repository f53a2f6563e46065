//! `netiso doctor`: what this host's kernel offers netiso, probed for real.
use std::{path::Path, thread};

use anyhow::Context as _;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHandle, TcMessage},
};
use nix::sched::{CloneFlags, unshare};

use crate::{
    datapath::{
        AttachMode, bpffs::BPFFS_MOUNT_POINT, redirect_peer_probe::redirect_peer_counts_rx,
    },
    net::{NetlinkSocket, container_device::probe_netkit},
};

/// One probed fact.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Whether netiso cannot work without it.
    pub required: bool,
    pub detail: String,
}

/// Probes the kernel. Qdiscs are tried on the loopback of a throwaway network
/// namespace, so nothing on the host changes.
pub fn checks() -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mode = AttachMode::for_running_kernel();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let bpffs = nix::sys::statfs::statfs(BPFFS_MOUNT_POINT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    let recent_enough = kernel_version(&kernel).is_some_and(|v| v >= MINIMUM_KERNEL);
    let mut checks = vec![
        Check {
            name: "kernel",
            ok: recent_enough,
            required: true,
            detail: if recent_enough {
                format!("{kernel}: 5.10 or later")
            } else {
                format!(
                    "{kernel}: netiso needs Linux 5.10 or later (bpf_redirect_peer, which hands packets to containers)"
                )
            },
        },
        Check {
            name: "root",
            ok: root,
            required: true,
            detail: if root {
                "running as root".into()
            } else {
                "run netiso as root".into()
            },
        },
        Check {
            name: "tc attach",
            ok: true,
            required: true,
            detail: format!(
                "kernel {kernel}: {}",
                match mode {
                    AttachMode::Tcx =>
                        "tcx links on the public interface and lo (6.6 or later); netlink filters on containers' devices",
                    AttachMode::Netlink => "netlink cls_bpf on clsact (before 6.6)",
                }
            ),
        },
        Check {
            name: "BTF",
            ok: btf,
            required: false,
            detail: if btf {
                "/sys/kernel/btf/vmlinux present".into()
            } else {
                "no /sys/kernel/btf/vmlinux: maps load without kernel BTF".into()
            },
        },
        Check {
            name: "bpffs",
            ok: bpffs,
            required: false,
            detail: if bpffs {
                format!("mounted at {BPFFS_MOUNT_POINT}")
            } else {
                format!("not mounted at {BPFFS_MOUNT_POINT}; the agent mounts it")
            },
        },
    ];
    if root {
        for (qdisc, required, purpose) in [
            ("htb", false, "rate limits"),
            ("fq_codel", false, "bloat reduction and unique egress flows"),
            ("clsact", true, "netlink attachments"),
        ] {
            let result = probe_qdisc(qdisc);
            checks.push(Check {
                name: qdisc,
                ok: result.is_ok(),
                required,
                detail: match result {
                    Ok(()) => format!("available ({purpose})"),
                    Err(e) => format!("not available, so no {purpose}: {e:#}"),
                },
            });
        }
    }
    checks
}

/// How containers receive on this kernel (not a missing feature: the agent works
/// either way, and probes this itself at start).
fn peer_delivery_check() -> Check {
    let counted = redirect_peer_counts_rx();
    Check {
        name: "peer rx",
        ok: matches!(counted, Ok(true)),
        required: false,
        detail: match counted {
            Ok(true) => "bpf_redirect_peer counts deliveries in the veth's counters: containers receive straight into their eth0".into(),
            Ok(false) => "bpf_redirect_peer does not count deliveries (kernel before the 2023 fix): containers receive through the host end of their veth, a little slower".into(),
            Err(e) => format!("probing bpf_redirect_peer failed, so containers receive through their veth: {e:#}"),
        },
    }
}

/// Which pair of devices containers get with `--container-device=auto` (not a
/// missing feature: veth pairs work everywhere).
fn container_device_check() -> Check {
    let netkit = probe_netkit();
    Check {
        name: "netkit",
        ok: netkit.is_ok(),
        required: false,
        detail: match netkit {
            Ok(()) => "netkit pairs work: containers get them (--container-device=auto); what they send skips the host end's receive backlog".into(),
            Err(why) => format!("no netkit ({why}; it needs Linux 6.7 or later): containers get veth pairs"),
        },
    }
}

/// The oldest kernel netiso runs on: the first with `bpf_redirect_peer`.
const MINIMUM_KERNEL: (u32, u32) = (5, 10);

/// (major, minor) of a kernel release such as `5.10.0-46-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

/// Adds a `kind` qdisc to the loopback of a new, private network namespace.
fn probe_qdisc(kind: &'static str) -> anyhow::Result<()> {
    thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).context("making a throwaway namespace")?;
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        let lo = socket.require_link("lo")?;
        let mut message = TcMessage::with_index(lo.index as i32);
        if kind == "clsact" {
            message.header.parent = TcHandle::CLSACT;
            message.header.handle = TcHandle::from(0xffff_0000);
        } else {
            message.header.parent = TcHandle::ROOT;
            message.header.handle = TcHandle::from(0x0001_0000);
        }
        message.attributes.push(TcAttribute::Kind(kind.to_owned()));
        match socket.request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            // ENOENT is "unknown qdisc"; any other refusal (htb wants options, for
            // one) comes from a kernel that knows the kind.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Err(e).with_context(|| format!("the kernel has no {kind} qdisc"))
            }
            _ => Ok(()),
        }
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Prints the checks; fails if a required one failed.
pub fn run() -> anyhow::Result<()> {
    let mut checks = checks();
    if nix::unistd::geteuid().is_root() {
        checks.push(peer_delivery_check());
        checks.push(container_device_check());
    }
    for check in &checks {
        let mark = if check.ok {
            "ok"
        } else if check.required {
            "FAIL"
        } else {
            "missing"
        };
        println!("{mark:>7}  {:<10} {}", check.name, check.detail);
    }
    if let Some(failed) = checks.iter().find(|c| c.required && !c.ok) {
        anyhow::bail!("{} is required: {}", failed.name, failed.detail);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        for (release, ok) in [
            ("5.10.0-46-amd64", true),
            ("6.1.0-57-amd64", true),
            ("6.18.44-fc-v669", true),
            ("5.4.0-150-generic", false),
            ("4.19.0", false),
            ("garbage", false),
        ] {
            let recent = kernel_version(release).is_some_and(|v| v >= MINIMUM_KERNEL);
            assert_eq!(recent, ok, "{release}");
        }
    }
}
