//! Attaching tc programs so that the attachment belongs to the kernel, not to the
//! agent: tcx links pinned in bpffs (kernel 6.6 and later), or cls_bpf filters at a
//! fixed priority and handle on a clsact qdisc (before 6.6). Either way a restarted
//! agent finds the attachment and replaces its program atomically.
use std::path::Path;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{
        Link as _, LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use serde::Serialize;

/// Netlink filters of netiso get this priority and handle, so that a restarted agent
/// finds and replaces them in place (each interface and direction has one netiso
/// program at most).
pub const NETLINK_PRIORITY: u16 = 0x6e69; // "ni"
const NETLINK_HANDLE: u16 = 1;

/// How tc programs are attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx links (kernel 6.6 and later): no qdisc needed, ordered, owned by a link.
    Tcx,
    /// cls_bpf filters on a clsact qdisc, managed over netlink (older kernels).
    Netlink,
}

impl AttachMode {
    /// The mode aya picks on the running kernel for ingress/egress attachments.
    pub fn for_running_kernel() -> Self {
        // Same rule as aya's `SchedClassifier::attach`.
        let tcx_capable = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if tcx_capable {
            AttachMode::Tcx
        } else {
            AttachMode::Netlink
        }
    }

    /// cls_bpf filters need a clsact qdisc on `iface`; one that is already there is
    /// fine. Nothing to do for tcx.
    pub(super) fn prepare_iface(self, iface: &str) -> anyhow::Result<()> {
        if self != AttachMode::Netlink {
            return Ok(());
        }
        match tc::qdisc_add_clsact(iface) {
            Ok(()) => Ok(()),
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(error) => Err(error).with_context(|| {
                format!("adding the clsact qdisc to {iface}; does the interface exist?")
            }),
        }
    }
}

/// Attaches program `name` of `ebpf` to `iface`, or takes over the attachment a
/// previous agent left there, replacing its program atomically. The attachment then
/// belongs to the kernel, not to `ebpf`: tcx links are pinned at `link_pin`, netlink
/// filters sit at a fixed priority and handle.
pub(super) fn attach_persistent(
    ebpf: &mut Ebpf,
    name: &str,
    mode: AttachMode,
    iface: &str,
    attach_type: TcAttachType,
    link_pin: &Path,
) -> anyhow::Result<()> {
    let program = loaded_program(ebpf, name)?;
    match mode {
        AttachMode::Tcx => {
            if link_pin.exists() {
                let adopted = PinnedLink::from_pin(link_pin)
                    .map_err(anyhow::Error::from)
                    .and_then(|pinned| Ok(SchedClassifierLink::try_from(FdLink::from(pinned))?))
                    .and_then(|link| Ok(program.attach_to_link(link)?));
                match adopted {
                    // The pin keeps the link; ours may go.
                    Ok(id) => {
                        drop(program.take_link(id)?);
                        return Ok(());
                    }
                    Err(error) => {
                        // A link whose interface was deleted cannot be updated.
                        log::info!("replacing stale link {}: {error:#}", link_pin.display());
                        std::fs::remove_file(link_pin)?;
                    }
                }
            }
            let id = program.attach_with_options(
                iface,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )?;
            let link = FdLink::try_from(program.take_link(id)?)?;
            link.pin(link_pin)
                .with_context(|| format!("pinning the link at {}", link_pin.display()))?;
        }
        AttachMode::Netlink => attach_filter(program, iface, attach_type)?,
    }
    Ok(())
}

/// Attaches `program` to `iface` as a cls_bpf filter on its clsact qdisc (added if
/// missing) at netiso's priority and handle, replacing the filter there if any. The
/// filter stays in the kernel when the agent exits.
///
/// Containers' devices are always attached this way, even where tcx exists: a tcx
/// attachment, and its removal with the device, each wait for an RCU grace period
/// while holding the rtnl lock (about 10 ms apiece here, three per container), where
/// a filter on a fresh clsact qdisc takes a tenth of a millisecond. netiso owns these
/// devices, so tcx's ordering among several programs buys nothing there.
pub(super) fn attach_filter(
    program: &mut SchedClassifier,
    iface: &str,
    attach_type: TcAttachType,
) -> anyhow::Result<()> {
    AttachMode::Netlink.prepare_iface(iface)?;
    let options = NlOptions {
        priority: NETLINK_PRIORITY,
        handle: TcHandle::new(0, NETLINK_HANDLE),
        classid: None,
    };
    let previous =
        SchedClassifierLink::attached(iface, attach_type, options.priority, options.handle, None)?;
    // Replacing fails when there is nothing to replace: then create.
    let id = match program.attach_to_link(previous) {
        Ok(id) => id,
        Err(_) => {
            program.attach_with_options(iface, attach_type, TcAttachOptions::Netlink(options))?
        }
    };
    // Forgetting the handle leaves the filter in the kernel when we exit.
    std::mem::forget(program.take_link(id)?);
    Ok(())
}

/// Removes netiso's netlink filter (its priority and handle) from `iface` in
/// direction `attach_type`; one already gone is fine.
pub(super) fn detach_netlink(iface: &str, attach_type: TcAttachType) {
    let handle = TcHandle::new(0, NETLINK_HANDLE);
    if let Ok(filter) =
        SchedClassifierLink::attached(iface, attach_type, NETLINK_PRIORITY, handle, None)
    {
        let _ = filter.detach();
    }
}

/// The program `name` of `ebpf`, loaded into the kernel on first use.
pub(super) fn loaded_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> anyhow::Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?;
    if program.fd().is_err() {
        program
            .load()
            .with_context(|| format!("verifying program {name}"))?;
    }
    Ok(program)
}
