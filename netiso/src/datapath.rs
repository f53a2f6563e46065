//! The eBPF datapath: loading the object, pinning its maps, attaching its tc programs
//! and reading its counters.
use std::{
    borrow::Borrow,
    collections::HashMap as StdHashMap,
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{SchedClassifier, TcAttachType, tc, tc::SchedClassifierLinkId},
    util::KernelVersion,
};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ETH0_IFINDEX_GLOBAL, CONTAINER_ETH0_INGRESS_PROGRAM,
    CONTAINER_LO_INGRESS_PROGRAM, CONTAINER_SLOT_GLOBAL, CONTAINER_VETH_INGRESS_PROGRAM,
    ContainerCounters, DATAPATH_CONFIG_MAP, DatapathConfig, Direction, ECHO_OWNERS_MAP, EchoKey,
    HOST_LO_INGRESS_PROGRAM, MAX_CONTAINERS, MAX_ECHO_CONVERSATIONS, PORT_OWNERS_MAP,
    PUBLIC_EGRESS_PROGRAM, PUBLIC_IFACE_COUNTER_SLOTS, PUBLIC_IFACE_COUNTERS_MAP,
    PUBLIC_INGRESS_PROGRAM, PortOwner, TrafficClass, TrafficCounters, VETH_CONTAINERS_MAP,
    public_iface_counter_slot,
};
use serde::Serialize;

use crate::{
    container::{ContainerNetwork, HostNetwork},
    netns::Bound,
};

/// Every pinned map with its layout: (name, key size, value size, entries).
const PINNED_MAPS: [(&str, usize, usize, u32); 6] = [
    (
        PUBLIC_IFACE_COUNTERS_MAP,
        size_of::<u32>(),
        size_of::<TrafficCounters>(),
        PUBLIC_IFACE_COUNTER_SLOTS,
    ),
    (
        PORT_OWNERS_MAP,
        size_of::<u32>(),
        size_of::<PortOwner>(),
        65536,
    ),
    (
        VETH_CONTAINERS_MAP,
        size_of::<u32>(),
        size_of::<u32>(),
        MAX_CONTAINERS,
    ),
    (
        CONTAINER_COUNTERS_MAP,
        size_of::<u32>(),
        size_of::<ContainerCounters>(),
        MAX_CONTAINERS,
    ),
    (
        DATAPATH_CONFIG_MAP,
        size_of::<u32>(),
        size_of::<DatapathConfig>(),
        1,
    ),
    (
        ECHO_OWNERS_MAP,
        size_of::<EchoKey>(),
        size_of::<PortOwner>(),
        MAX_ECHO_CONVERSATIONS,
    ),
];

/// What the datapath attached for one container.
struct ContainerAttachments {
    veth: SchedClassifierLinkId,
    /// The container's own copy of the object, holding the programs attached inside
    /// its namespace; dropping it detaches them.
    inside: Bound<Ebpf>,
}

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
    /// Bound to the host's namespace, where its programs are attached.
    ebpf: Bound<Ebpf>,
    pin_root: PathBuf,
    attach_mode: AttachMode,
    /// What is attached for each container, by slot.
    containers: StdHashMap<u32, ContainerAttachments>,
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
        for (name, key_size, value_size, entries) in PINNED_MAPS {
            check_pinned_map_layout(&pin_root.join(name), key_size, value_size, entries)?;
        }
        let ebpf = Bound::to_current(load_object(pin_root, &[])?)?;
        Ok(Self {
            ebpf,
            pin_root: pin_root.to_owned(),
            attach_mode: AttachMode::for_running_kernel(),
            containers: StdHashMap::new(),
        })
    }

    /// Where this datapath's maps are pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Attaches the programs to both directions of the public interface. Runs in the
    /// host's network namespace (the calling thread's).
    pub fn attach_public_iface(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        self.prepare_iface(iface)?;
        for (name, attach_type) in [
            (PUBLIC_INGRESS_PROGRAM, TcAttachType::Ingress),
            (PUBLIC_EGRESS_PROGRAM, TcAttachType::Egress),
        ] {
            self.remove_stale_filter(iface, attach_type, name)?;
            self.program(name)?.attach(iface, attach_type).with_context(|| {
                format!("attaching {name} to {iface}; check that the interface exists (`ip link show {iface}`)")
            })?;
        }
        Ok(self.attach_mode)
    }

    /// Attaches the program that steers host traffic for containers' ports to the
    /// host's loopback. Runs in the host's network namespace.
    pub fn attach_host_lo(&mut self, lo: &str) -> anyhow::Result<()> {
        self.prepare_iface(lo)?;
        self.remove_stale_filter(lo, TcAttachType::Ingress, HOST_LO_INGRESS_PROGRAM)?;
        self.program(HOST_LO_INGRESS_PROGRAM)?
            .attach(lo, TcAttachType::Ingress)
            .with_context(|| format!("attaching {HOST_LO_INGRESS_PROGRAM} to {lo}"))?;
        Ok(())
    }

    /// Writes the host's addresses and interfaces for the programs.
    pub fn configure(&mut self, host: &HostNetwork) -> anyhow::Result<()> {
        let config = DatapathConfig {
            host_ipv4: host.ipv4.map(|a| a.octets()).unwrap_or_default(),
            host_ipv6: host.ipv6.map(|a| a.octets()).unwrap_or_default(),
            has_ipv4: u32::from(host.ipv4.is_some()),
            has_ipv6: u32::from(host.ipv6.is_some()),
            public_ifindex: host.public.index,
            host_lo_ifindex: host.lo_index,
        };
        let mut map: Array<_, DatapathConfig> =
            Array::try_from(self.map_mut(DATAPATH_CONFIG_MAP)?)?;
        map.set(0, config, 0)
            .context("writing the datapath configuration")?;
        Ok(())
    }

    /// Gives the container its ports in the datapath and attaches the veth program to
    /// its host-side veth. Fails, changing nothing, if another container owns one of
    /// the ports. Runs in the host's network namespace.
    pub fn add_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let slot = container.slot;
        let ranges: Vec<_> = container
            .ports
            .iter()
            .chain(std::iter::once(&container.ephemeral_ports))
            .copied()
            .collect();
        {
            let owners: Array<_, PortOwner> = Array::try_from(self.map(PORT_OWNERS_MAP)?)?;
            for port in ranges.iter().flat_map(|r| r.ports()) {
                let owner = owners.get(&u32::from(port), 0)?;
                if let Some(other) = owner.slot().filter(|s| *s != slot) {
                    bail!("port {port} is already owned by the container in slot {other}");
                }
            }
        }
        self.reset_container_counters(slot)?;
        let mut owners: Array<_, PortOwner> = Array::try_from(self.map_mut(PORT_OWNERS_MAP)?)?;
        let entry = PortOwner::new(slot, container.host_veth_index);
        for port in ranges.iter().flat_map(|r| r.ports()) {
            owners.set(u32::from(port), entry, 0)?;
        }
        let mut veths: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(VETH_CONTAINERS_MAP)?)?;
        veths.insert(container.host_veth_index, slot, 0)?;
        self.prepare_iface(&container.host_veth)?;
        let veth = self
            .program(CONTAINER_VETH_INGRESS_PROGRAM)?
            .attach(&container.host_veth, TcAttachType::Ingress)
            .with_context(|| {
                format!("attaching the container program to {}", container.host_veth)
            })?;
        match self.attach_inside(container) {
            Ok(inside) => {
                self.containers
                    .insert(slot, ContainerAttachments { veth, inside });
                Ok(())
            }
            Err(error) => {
                let _ = self.program(CONTAINER_VETH_INGRESS_PROGRAM)?.detach(veth);
                Err(error)
            }
        }
    }

    /// Attaches the programs inside the container's namespace, from a copy of the
    /// object of its own: the lo program must know the container's slot and eth0, and
    /// separate copies keep attachments of different containers apart (inside every
    /// namespace eth0 has the same ifindex, which would make their netlink link ids
    /// collide).
    fn attach_inside(&self, container: &ContainerNetwork) -> anyhow::Result<Bound<Ebpf>> {
        let eth0_index = container.container_eth0_index;
        let mut inside = load_object(
            &self.pin_root,
            &[
                (CONTAINER_SLOT_GLOBAL, container.slot),
                (CONTAINER_ETH0_IFINDEX_GLOBAL, eth0_index),
            ],
        )?;
        crate::netns::run_in(&container.netns, || -> anyhow::Result<()> {
            let eth0 = nix::net::if_::if_indextoname(eth0_index)
                .context("finding the container's eth0")?
                .into_string()
                .map_err(|_| anyhow::anyhow!("the container's eth0 name is not UTF-8"))?;
            for (program, iface) in [
                (CONTAINER_ETH0_INGRESS_PROGRAM, eth0.as_str()),
                (CONTAINER_LO_INGRESS_PROGRAM, "lo"),
            ] {
                self.prepare_iface(iface)?;
                loaded_program(&mut inside, program)?
                    .attach(iface, TcAttachType::Ingress)
                    .with_context(|| format!("attaching {program} to the container's {iface}"))?;
            }
            Ok(())
        })??;
        Bound::to_path(inside, &container.netns)
    }

    /// Takes the container's ports back and forgets its veth. Idempotent.
    pub fn remove_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let slot = container.slot;
        if let Some(attached) = self.containers.remove(&slot) {
            // The interfaces may already be gone, and their attachments with them.
            let _ = self
                .program(CONTAINER_VETH_INGRESS_PROGRAM)?
                .detach(attached.veth);
            drop(attached.inside);
        }
        let mut owners: Array<_, PortOwner> = Array::try_from(self.map_mut(PORT_OWNERS_MAP)?)?;
        for port in container
            .ports
            .iter()
            .chain(std::iter::once(&container.ephemeral_ports))
            .flat_map(|r| r.ports())
        {
            if owners.get(&u32::from(port), 0)?.slot() == Some(slot) {
                owners.set(u32::from(port), PortOwner::default(), 0)?;
            }
        }
        let mut veths: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(VETH_CONTAINERS_MAP)?)?;
        match veths.remove(&container.host_veth_index) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(error) => return Err(error).context("removing the container's veth entry"),
        }
        Ok(())
    }

    /// The counters of container `slot`, summed over CPUs.
    pub fn container_counters(&self, slot: u32) -> anyhow::Result<ContainerCounters> {
        read_container_counters(
            &PerCpuArray::try_from(self.map(CONTAINER_COUNTERS_MAP)?)?,
            slot,
        )
    }

    fn reset_container_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let mut counters: PerCpuArray<_, ContainerCounters> =
            PerCpuArray::try_from(self.map_mut(CONTAINER_COUNTERS_MAP)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zeros = PerCpuValues::try_from(vec![ContainerCounters::default(); cpus])?;
        counters.set(slot, zeros, 0)?;
        Ok(())
    }

    fn map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }

    fn map_mut(&mut self, name: &str) -> anyhow::Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }

    /// The loaded program `name` (loaded into the kernel on first use).
    fn program(&mut self, name: &str) -> anyhow::Result<&mut SchedClassifier> {
        loaded_program(&mut self.ebpf, name)
    }

    /// cls_bpf filters need a clsact qdisc; one that is already there is fine.
    fn prepare_iface(&self, iface: &str) -> anyhow::Result<()> {
        if self.attach_mode != AttachMode::Netlink {
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

    /// A killed agent leaves its cls_bpf filters behind (tcx links die with their
    /// process); remove them so packets are not handled twice.
    fn remove_stale_filter(
        &self,
        iface: &str,
        attach_type: TcAttachType,
        name: &str,
    ) -> anyhow::Result<()> {
        if self.attach_mode != AttachMode::Netlink {
            return Ok(());
        }
        match tc::qdisc_detach_program(iface, attach_type, name) {
            Ok(()) => {
                log::info!("removed a stale {name} filter from {iface}");
                Ok(())
            }
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => {
                Err(error).with_context(|| format!("removing stale {name} filters from {iface}"))
            }
        }
    }

    /// Reads the public interface's counters, summed over CPUs.
    pub fn public_iface_counters(&self) -> anyhow::Result<PublicIfaceCounters> {
        PublicIfaceCounters::read_loaded(&self.ebpf)
    }
}

/// Loads the object with every map taken from (or pinned to) `pin_root` and the given
/// load-time constants.
fn load_object(pin_root: &Path, globals: &[(&'static str, u32)]) -> anyhow::Result<Ebpf> {
    let btf = Btf::from_sys_fs().ok();
    let mut loader = EbpfLoader::new();
    loader.btf(btf.as_ref());
    for (name, ..) in PINNED_MAPS {
        loader.map_pin_path(name, pin_root.join(name));
    }
    for (name, value) in globals {
        loader.override_global(name, value, true);
    }
    loader.load(EBPF_OBJECT).context(
        "loading the eBPF object into the kernel (needs root and a kernel with BPF and BTF)",
    )
}

/// The program `name` of `ebpf`, loaded into the kernel on first use.
fn loaded_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
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

/// Reads and sums the per-CPU counters of container `slot`.
pub fn read_container_counters<T: Borrow<MapData>>(
    map: &PerCpuArray<T, ContainerCounters>,
    slot: u32,
) -> anyhow::Result<ContainerCounters> {
    let per_cpu = map.get(&slot, 0)?;
    Ok(per_cpu
        .iter()
        .fold(ContainerCounters::default(), |sum, c| sum.add(*c)))
}

/// Reads a container's counters from the pinned map under `pin_root`.
pub fn read_pinned_container_counters(
    pin_root: &Path,
    slot: u32,
) -> anyhow::Result<ContainerCounters> {
    let pin = pin_root.join(CONTAINER_COUNTERS_MAP);
    let map_data =
        MapData::from_pin(&pin).with_context(|| format!("opening pinned map {}", pin.display()))?;
    read_container_counters(&PerCpuArray::try_from(Map::from_map_data(map_data)?)?, slot)
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
