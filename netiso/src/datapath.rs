//! The eBPF datapath: loading the object, pinning its maps, attaching its tc programs
//! and reading its counters.
use std::{
    borrow::Borrow,
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use netiso_common::{
    Direction, PUBLIC_EGRESS_PROGRAM, PUBLIC_IFACE_COUNTER_SLOTS, PUBLIC_IFACE_COUNTERS_MAP,
    PUBLIC_INGRESS_PROGRAM, TrafficClass, TrafficCounters, public_iface_counter_slot,
};
use serde::Serialize;

/// The eBPF object built from `netiso-ebpf` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netiso"));

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
        let tcx_capable = KernelVersion::current()
            .map(|v| v >= KernelVersion::new(6, 6, 0))
            .unwrap_or(false);
        if tcx_capable {
            AttachMode::Tcx
        } else {
            AttachMode::Netlink
        }
    }
}

/// The loaded datapath. Dropping it detaches its programs; pinned maps stay.
pub struct Datapath {
    ebpf: Ebpf,
    pin_root: PathBuf,
}

impl Datapath {
    /// Loads the eBPF object, reusing the maps already pinned under `pin_root` (so
    /// counters survive agent restarts) and pinning new ones there.
    pub fn load(pin_root: &Path) -> anyhow::Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this netiso binary was built with AYA_BUILD_SKIP=1 and has no eBPF programs; rebuild it without that variable"
            );
        }
        let counters_pin = pin_root.join(PUBLIC_IFACE_COUNTERS_MAP);
        check_pinned_map_layout(
            &counters_pin,
            size_of::<u32>(),
            size_of::<TrafficCounters>(),
            PUBLIC_IFACE_COUNTER_SLOTS,
        )?;
        let btf = Btf::from_sys_fs().ok();
        let ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .map_pin_path(PUBLIC_IFACE_COUNTERS_MAP, counters_pin)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object into the kernel (needs root and a kernel with BPF and BTF)")?;
        Ok(Self {
            ebpf,
            pin_root: pin_root.to_owned(),
        })
    }

    /// Where this datapath's maps are pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Attaches the counting programs to both directions of the public interface.
    pub fn attach_public_iface(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        let mode = AttachMode::for_running_kernel();
        if mode == AttachMode::Netlink {
            // cls_bpf filters need a clsact qdisc; one that is already there is fine.
            if let Err(error) = tc::qdisc_add_clsact(iface) {
                let exists = matches!(&error, tc::TcError::NetlinkError(e) if e.raw_os_error() == Some(libc::EEXIST));
                if !exists {
                    return Err(error).with_context(|| {
                        format!("adding the clsact qdisc to {iface}; does the interface exist?")
                    });
                }
            }
        }
        for (name, attach_type) in [
            (PUBLIC_INGRESS_PROGRAM, TcAttachType::Ingress),
            (PUBLIC_EGRESS_PROGRAM, TcAttachType::Egress),
        ] {
            if mode == AttachMode::Netlink {
                // A killed agent leaves its cls_bpf filters behind (tcx links die with
                // their process); remove them so packets are not counted twice.
                match tc::qdisc_detach_program(iface, attach_type, name) {
                    Ok(()) => log::info!("removed a stale {name} filter from {iface}"),
                    Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(error).with_context(|| {
                            format!("removing stale {name} filters from {iface}")
                        });
                    }
                }
            }
            let program: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("verifying program {name}"))?;
            program.attach(iface, attach_type).with_context(|| {
                format!("attaching {name} to {iface}; check that the interface exists (`ip link show {iface}`)")
            })?;
        }
        Ok(mode)
    }

    /// Reads the public interface's counters, summed over CPUs.
    pub fn public_iface_counters(&self) -> anyhow::Result<PublicIfaceCounters> {
        PublicIfaceCounters::read_loaded(&self.ebpf)
    }
}

/// Refuses to reuse a pinned map whose layout differs from this build's (aya reuses
/// pinned maps without checking, which would corrupt counters silently).
fn check_pinned_map_layout(
    pin: &Path,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
) -> anyhow::Result<()> {
    let map = match MapData::from_pin(pin) {
        Ok(map) => map,
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            return Ok(());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("opening pinned map {}", pin.display()));
        }
    };
    let info = map.info()?;
    let found = (info.key_size(), info.value_size(), info.max_entries());
    let wanted = (key_size as u32, value_size as u32, max_entries);
    if found != wanted {
        bail!(
            "pinned map {} has layout (key, value, entries) {found:?} but this netiso needs {wanted:?}; it was made by another netiso version: remove it with `rm {}` and start again",
            pin.display(),
            pin.display()
        );
    }
    Ok(())
}

/// Totals of what crossed the public interface, per direction and traffic class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicIfaceCounters {
    slots: Vec<TrafficCounters>,
}

impl PublicIfaceCounters {
    /// Reads a pinned counter map, as an operator's tool or a test would.
    pub fn read_pinned(pin: &Path) -> anyhow::Result<Self> {
        let map_data = MapData::from_pin(pin)
            .with_context(|| format!("opening pinned map {}", pin.display()))?;
        let map = Map::from_map_data(map_data)?;
        Self::read(&PerCpuArray::try_from(map)?)
    }

    /// Reads the counter map of a loaded object (pinned or not).
    pub fn read_loaded(ebpf: &Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .map(PUBLIC_IFACE_COUNTERS_MAP)
            .context("public interface counter map missing from the eBPF object")?;
        Self::read(&PerCpuArray::try_from(map)?)
    }

    fn read<T: Borrow<MapData>>(map: &PerCpuArray<T, TrafficCounters>) -> anyhow::Result<Self> {
        let slots = (0..PUBLIC_IFACE_COUNTER_SLOTS)
            .map(|slot| {
                let per_cpu = map.get(&slot, 0)?;
                Ok(per_cpu
                    .iter()
                    .fold(TrafficCounters::default(), |sum, c| TrafficCounters {
                        packets: sum.packets + c.packets,
                        bytes: sum.bytes + c.bytes,
                    }))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { slots })
    }

    /// The counters of one direction and class.
    pub fn get(&self, direction: Direction, class: TrafficClass) -> TrafficCounters {
        self.slots
            .get(public_iface_counter_slot(direction, class) as usize)
            .copied()
            .unwrap_or_default()
    }
}
