//! `netiso doctor`: what this host's kernel offers netiso, probed for real.
use std::{path::Path, thread};

use anyhow::Context as _;
use nix::sched::{CloneFlags, unshare};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};

use crate::{bpffs::BPFFS_MOUNT_POINT, datapath::AttachMode, netlink};

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
    let mut checks = vec![
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
                    AttachMode::Tcx => "tcx links (6.6 or later)",
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
            ("clsact", mode == AttachMode::Netlink, "netlink attachments"),
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

/// Adds a `kind` qdisc to the loopback of a new, private network namespace.
fn probe_qdisc(kind: &'static str) -> anyhow::Result<()> {
    thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).context("making a throwaway namespace")?;
        netlink::with_handle(|handle| async move {
            let lo = netlink::require_link(&handle, "lo").await?;
            let mut message = TcMessage::with_index(lo.index as i32);
            if kind == "clsact" {
                message.header.parent = TcHandle::CLSACT;
                message.header.handle = TcHandle::from(0xffff_0000);
            } else {
                message.header.parent = TcHandle::ROOT;
                message.header.handle = TcHandle::from(0x0001_0000);
            }
            message.attributes.push(TcAttribute::Kind(kind.to_owned()));
            let mut request = rtnetlink::packet_core::NetlinkMessage::from(
                rtnetlink::packet_route::RouteNetlinkMessage::NewQueueDiscipline(message),
            );
            request.header.flags = rtnetlink::packet_core::NLM_F_REQUEST
                | rtnetlink::packet_core::NLM_F_ACK
                | rtnetlink::packet_core::NLM_F_CREATE
                | rtnetlink::packet_core::NLM_F_EXCL;
            let mut answers = handle.clone().request(request)?;
            while let Some(answer) = futures::StreamExt::next(&mut answers).await {
                // ENOENT is "unknown qdisc"; any other refusal (htb wants options,
                // for one) comes from a kernel that knows the kind.
                if let rtnetlink::packet_core::NetlinkPayload::Error(error) = answer.payload
                    && let Some(code) = error.code
                    && -code.get() == libc::ENOENT
                {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOENT))
                        .with_context(|| format!("the kernel has no {kind} qdisc"));
                }
            }
            Ok(())
        })
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Prints the checks; fails if a required one failed.
pub fn run() -> anyhow::Result<()> {
    let checks = checks();
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
