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
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
    util::KernelVersion,
};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ETH0_IFINDEX_GLOBAL, CONTAINER_ETH0_INGRESS_PROGRAM,
    CONTAINER_LO_INGRESS_PROGRAM, CONTAINER_SHAPING_MAP, CONTAINER_SLOT_GLOBAL,
    CONTAINER_VETH_INGRESS_PROGRAM, ContainerCounters, ContainerShaping, DATAPATH_CONFIG_MAP,
    DatapathConfig, Direction, ECHO_OWNERS_MAP, EchoKey, HOST_LO_INGRESS_PROGRAM, MAX_CONTAINERS,
    MAX_ECHO_CONVERSATIONS, PORT_OWNERS_MAP, PUBLIC_EGRESS_PROGRAM, PUBLIC_IFACE_COUNTER_SLOTS,
    PUBLIC_IFACE_COUNTERS_MAP, PUBLIC_INGRESS_PROGRAM, PortOwner, TrafficClass, TrafficCounters,
    VETH_CONTAINERS_MAP, public_iface_counter_slot,
};
use serde::Serialize;

use crate::container::{ContainerNetwork, HostNetwork};

/// Every pinned map with its layout: (name, key size, value size, entries).
const PINNED_MAPS: [(&str, usize, usize, u32); 7] = [
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
    (
        CONTAINER_SHAPING_MAP,
        size_of::<u32>(),
        size_of::<ContainerShaping>(),
        MAX_CONTAINERS,
    ),
];

/// Subdirectory of the pin root holding the pinned tcx links.
const LINKS_DIR: &str = "links";

/// Netlink filters of netiso get this priority and handle, so that a restarted agent
/// finds and replaces them in place (each interface and direction has one netiso
/// program at most).
const NETLINK_PRIORITY: u16 = 0x6e69; // "ni"
const NETLINK_HANDLE: u16 = 1;

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

/// The loaded datapath. Its attachments and maps outlive it (and the agent): dropping
/// it, or killing the agent, leaves packets flowing.
pub struct Datapath {
    ebpf: Ebpf,
    pin_root: PathBuf,
    attach_mode: AttachMode,
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
        let ebpf = load_object(pin_root, &[])?;
        let links = pin_root.join(LINKS_DIR);
        std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))?;
        Ok(Self {
            ebpf,
            pin_root: pin_root.to_owned(),
            attach_mode: AttachMode::for_running_kernel(),
        })
    }

    /// Where this datapath's maps are pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Attaches the programs to both directions of the public interface, or takes
    /// over the attachments a previous agent left (atomically: no packet is missed).
    /// Runs in the host's network namespace (the calling thread's).
    pub fn attach_public_iface(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        self.prepare_iface(iface)?;
        for (name, attach_type, pin) in [
            (
                PUBLIC_INGRESS_PROGRAM,
                TcAttachType::Ingress,
                "public-ingress",
            ),
            (PUBLIC_EGRESS_PROGRAM, TcAttachType::Egress, "public-egress"),
        ] {
            let link_pin = self.link_pin(pin);
            attach_persistent(&mut self.ebpf, name, self.attach_mode, iface, attach_type, &link_pin)
                .with_context(|| {
                    format!("attaching {name} to {iface}; check that the interface exists (`ip link show {iface}`)")
                })?;
        }
        Ok(self.attach_mode)
    }

    /// Attaches the program that steers host traffic for containers' ports to the
    /// host's loopback (or takes it over). Runs in the host's network namespace.
    pub fn attach_host_lo(&mut self, lo: &str) -> anyhow::Result<()> {
        self.prepare_iface(lo)?;
        let link_pin = self.link_pin("host-lo-ingress");
        attach_persistent(
            &mut self.ebpf,
            HOST_LO_INGRESS_PROGRAM,
            self.attach_mode,
            lo,
            TcAttachType::Ingress,
            &link_pin,
        )
        .with_context(|| format!("attaching {HOST_LO_INGRESS_PROGRAM} to {lo}"))
    }

    /// Where the tcx link of attachment `name` is pinned.
    fn link_pin(&self, name: &str) -> PathBuf {
        self.pin_root.join(LINKS_DIR).join(name)
    }

    /// The pins of a container's three attachments.
    fn container_link_pins(&self, slot: u32) -> [PathBuf; 3] {
        ["veth", "eth0", "lo"].map(|at| self.link_pin(&format!("container-{slot}-{at}")))
    }

    /// Writes the host's addresses and interfaces for the programs, and the handle of
    /// the public interface's fq_codel whose flows they assign (0: none).
    pub fn configure(&mut self, host: &HostNetwork, egress_flows_qdisc: u32) -> anyhow::Result<()> {
        let config = DatapathConfig {
            host_ipv4: host.ipv4.map(|a| a.octets()).unwrap_or_default(),
            host_ipv6: host.ipv6.map(|a| a.octets()).unwrap_or_default(),
            has_ipv4: u32::from(host.ipv4.is_some()),
            has_ipv6: u32::from(host.ipv6.is_some()),
            public_ifindex: host.public.index,
            host_lo_ifindex: host.lo_index,
            egress_flows_qdisc,
        };
        let mut map: Array<_, DatapathConfig> =
            Array::try_from(self.map_mut(DATAPATH_CONFIG_MAP)?)?;
        map.set(0, config, 0)
            .context("writing the datapath configuration")?;
        Ok(())
    }

    /// Gives the container its ports in the datapath and attaches its programs (or,
    /// for a container a previous agent set up, takes them over without a gap and
    /// keeps its counters). Fails, changing nothing, if another container owns one of
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
        // A container a previous agent already gave to the datapath keeps its
        // counters (they must never go backwards); a new one starts from zero.
        let adopting = {
            let veths: HashMap<_, u32, u32> = HashMap::try_from(self.map(VETH_CONTAINERS_MAP)?)?;
            veths.get(&container.host_veth_index, 0).ok() == Some(slot)
        };
        if !adopting {
            self.reset_container_counters(slot)?;
        }
        let mut owners: Array<_, PortOwner> = Array::try_from(self.map_mut(PORT_OWNERS_MAP)?)?;
        let entry = PortOwner::new(slot, container.host_veth_index);
        for port in ranges.iter().flat_map(|r| r.ports()) {
            owners.set(u32::from(port), entry, 0)?;
        }
        let mut veths: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(VETH_CONTAINERS_MAP)?)?;
        veths.insert(container.host_veth_index, slot, 0)?;
        self.prepare_iface(&container.host_veth)?;
        let [veth_pin, ..] = self.container_link_pins(slot);
        attach_persistent(
            &mut self.ebpf,
            CONTAINER_VETH_INGRESS_PROGRAM,
            self.attach_mode,
            &container.host_veth,
            TcAttachType::Ingress,
            &veth_pin,
        )
        .with_context(|| format!("attaching the container program to {}", container.host_veth))?;
        self.attach_inside(container)
    }

    /// Attaches the programs inside the container's namespace, from a copy of the
    /// object of its own: the lo program must know the container's slot and eth0. The
    /// copy can be dropped at once: its attachments are pinned (tcx) or left in the
    /// kernel (netlink), and hold its programs.
    fn attach_inside(&self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let eth0_index = container.container_eth0_index;
        let [_, eth0_pin, lo_pin] = self.container_link_pins(container.slot);
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
            for (program, iface, pin) in [
                (CONTAINER_ETH0_INGRESS_PROGRAM, eth0.as_str(), &eth0_pin),
                (CONTAINER_LO_INGRESS_PROGRAM, "lo", &lo_pin),
            ] {
                self.prepare_iface(iface)?;
                attach_persistent(
                    &mut inside,
                    program,
                    self.attach_mode,
                    iface,
                    TcAttachType::Ingress,
                    pin,
                )
                .with_context(|| format!("attaching {program} to the container's {iface}"))?;
            }
            Ok(())
        })?
    }

    /// Changes a container's non-ephemeral ports live: new ports are steered to it
    /// first, then ports it no longer has go back to the host. Ports it keeps (and its
    /// ephemeral range) are not touched, so their connections never notice. Fails,
    /// changing nothing, if another container owns a new port.
    pub fn update_ports(
        &mut self,
        container: &ContainerNetwork,
        ports: &[crate::ports::PortRange],
    ) -> anyhow::Result<()> {
        let slot = container.slot;
        let keep = |port: u16| {
            container.ephemeral_ports.contains(port) || ports.iter().any(|r| r.contains(port))
        };
        let mut owners: Array<_, PortOwner> = Array::try_from(self.map_mut(PORT_OWNERS_MAP)?)?;
        for port in ports.iter().flat_map(|r| r.ports()) {
            if let Some(other) = owners
                .get(&u32::from(port), 0)?
                .slot()
                .filter(|s| *s != slot)
            {
                bail!("port {port} is already owned by the container in slot {other}");
            }
        }
        let entry = PortOwner::new(slot, container.host_veth_index);
        for port in ports.iter().flat_map(|r| r.ports()) {
            owners.set(u32::from(port), entry, 0)?;
        }
        for port in container.ports.iter().flat_map(|r| r.ports()) {
            if !keep(port) {
                owners.set(u32::from(port), PortOwner::default(), 0)?;
            }
        }
        Ok(())
    }

    /// Forgets every container whose slot is not in `keep`: their ports, veth entries
    /// and pinned links (what a crash between creating and recording a container, or a
    /// lost state directory, leaves). Returns how many port entries were cleared.
    pub fn forget_containers_except(&mut self, keep: &[u32]) -> anyhow::Result<usize> {
        let mut owners: Array<_, PortOwner> = Array::try_from(self.map_mut(PORT_OWNERS_MAP)?)?;
        let mut cleared = 0;
        for port in 0..=u16::MAX {
            let owner = owners.get(&u32::from(port), 0)?;
            if owner.slot().is_some_and(|slot| !keep.contains(&slot)) {
                owners.set(u32::from(port), PortOwner::default(), 0)?;
                cleared += 1;
            }
        }
        let mut veths: HashMap<_, u32, u32> =
            HashMap::try_from(self.map_mut(VETH_CONTAINERS_MAP)?)?;
        let stale: Vec<u32> = veths
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, slot)| !keep.contains(slot))
            .map(|(ifindex, _)| ifindex)
            .collect();
        for ifindex in stale {
            let _ = veths.remove(&ifindex);
        }
        for slot in (0..MAX_CONTAINERS).filter(|slot| !keep.contains(slot)) {
            self.set_ingress_shaped(slot, false)?;
        }
        let links = self.pin_root.join(LINKS_DIR);
        for entry in std::fs::read_dir(&links)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let slot = name
                .strip_prefix("container-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|slot| slot.parse::<u32>().ok());
            if slot.is_some_and(|slot| !keep.contains(&slot)) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(cleared)
    }

    /// Takes the container's ports back and forgets its veth. Idempotent.
    pub fn remove_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let slot = container.slot;
        // Netlink filters inside the container's namespace are removed there: an
        // adopted namespace outlives the container, and its lo must work without us.
        if self.attach_mode == AttachMode::Netlink && container.netns.exists() {
            let eth0_index = container.container_eth0_index;
            crate::netns::run_in(&container.netns, || {
                let eth0 = nix::net::if_::if_indextoname(eth0_index)
                    .ok()
                    .and_then(|name| name.into_string().ok());
                let attached = [
                    (CONTAINER_LO_INGRESS_PROGRAM, Some("lo".to_owned())),
                    (CONTAINER_ETH0_INGRESS_PROGRAM, eth0),
                ];
                for (name, iface) in attached {
                    if let Some(iface) = iface {
                        // Already gone is fine.
                        let _ = tc::qdisc_detach_program(&iface, TcAttachType::Ingress, name);
                    }
                }
            })?;
        }
        // Unpinning a tcx link detaches it (nothing else holds it).
        for pin in self.container_link_pins(slot) {
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", pin.display())),
            }
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
        self.update_shaping(slot, |entry| *entry = ContainerShaping::default())
    }

    /// Whether container `slot`'s inbound packets go through the qdiscs of the host
    /// end of its veth (its ingress limit) or straight into it.
    pub fn set_ingress_shaped(&mut self, slot: u32, shaped: bool) -> anyhow::Result<()> {
        self.update_shaping(slot, |entry| entry.ingress_shaped = u32::from(shaped))
    }

    /// The fq_codel class id (`major:flow`) container `slot`'s packets leave the
    /// public interface with; 0 for none (fq_codel then hashes them).
    pub fn set_egress_flow(&mut self, slot: u32, classid: u32) -> anyhow::Result<()> {
        self.update_shaping(slot, |entry| entry.egress_flow_classid = classid)
    }

    fn update_shaping(
        &mut self,
        slot: u32,
        change: impl FnOnce(&mut ContainerShaping),
    ) -> anyhow::Result<()> {
        let mut shaping: Array<_, ContainerShaping> =
            Array::try_from(self.map_mut(CONTAINER_SHAPING_MAP)?)?;
        let old = shaping.get(&slot, 0)?;
        let mut new = old;
        change(&mut new);
        if new != old {
            shaping
                .set(slot, new, 0)
                .context("setting the container's shaping")?;
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

/// Attaches program `name` of `ebpf` to `iface`, or takes over the attachment a
/// previous agent left there, replacing its program atomically. The attachment then
/// belongs to the kernel, not to `ebpf`: tcx links are pinned at `link_pin`, netlink
/// filters sit at a fixed priority and handle.
fn attach_persistent(
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
        AttachMode::Netlink => {
            let options = NlOptions {
                priority: NETLINK_PRIORITY,
                handle: TcHandle::new(0, NETLINK_HANDLE),
                classid: None,
            };
            let previous = SchedClassifierLink::attached(
                iface,
                attach_type,
                options.priority,
                options.handle,
                None,
            )?;
            // Replacing fails when there is nothing to replace: then create.
            let id = match program.attach_to_link(previous) {
                Ok(id) => id,
                Err(_) => program.attach_with_options(
                    iface,
                    attach_type,
                    TcAttachOptions::Netlink(options),
                )?,
            };
            // Forgetting the handle leaves the filter in the kernel when we exit.
            std::mem::forget(program.take_link(id)?);
        }
    }
    Ok(())
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
