//! The eBPF datapath from userspace: loading the object ([`object`]), its maps as
//! typed handles ([`maps`]), attaching its programs so they outlive the agent
//! ([`attach`]), giving containers their ports and programs ([`containers`]) and
//! reading its counters ([`counters`]). Where packets are steered is the eBPF crate's
//! business: `netiso-ebpf/src/*.rs`, one file per attach point.
mod attach;
pub mod bpffs;
mod containers;
mod counters;
pub mod drop_events;
pub mod host_addresses;
pub mod layout;
mod maps;
pub mod netkit;
pub use maps::DropEventMaps;
pub use object::{DatapathLogLevel, LOG_MAP, loader};
mod object;
pub mod redirect_peer_probe;
mod upgrade;
pub use upgrade::UpgradeReport;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{Ebpf, programs::TcAttachType};
use netiso_common::{
    CONTAINER_LO_EGRESS_PROGRAM, DatapathConfig, HOST_LO_INGRESS_PROGRAM, HOST_PORT_CLOSED,
    LayoutState, PUBLIC_EGRESS_PROGRAM, PUBLIC_INGRESS_PROGRAM, PinnedLayout,
};

pub use attach::{AttachMode, NETLINK_PRIORITY};
pub use counters::{
    PublicIfaceCounters, open_container_counters, read_container_counters,
    read_pinned_container_counters,
};
pub use maps::DatapathMaps;
pub use object::EBPF_OBJECT;
pub use redirect_peer_probe::Delivery;

use crate::{failpoints, net::host::HostNetwork};

/// Subdirectory of the pin root holding the pinned tcx links.
const LINKS_DIR: &str = "links";

/// The loaded datapath. Its attachments and maps outlive it (and the agent): dropping
/// it, or killing the agent, leaves packets flowing.
pub struct Datapath {
    /// The programs; the maps are in `maps`.
    ebpf: Ebpf,
    maps: DatapathMaps,
    pin_root: PathBuf,
    /// Where the maps are pinned: the pin root, or while an upgrade of older pinned
    /// state is under way, the directory the new maps are built in.
    maps_dir: PathBuf,
    /// That upgrade: until it completes, attachments wait (see [`upgrade`]).
    upgrade: Option<upgrade::Upgrade>,
    /// Whether the load made every map (none was pinned): they start empty.
    maps_made_at_load: bool,
    log_level: DatapathLogLevel,
    attach_mode: AttachMode,
    /// Makes the per-container copies of the loopback program where the kernel
    /// refuses the shared one; `None`: the shared one serves every container.
    copy_loader: Option<object::CopyLoader>,
    /// Until the agent takes them for its drop monitor.
    drop_events: Option<maps::DropEventMaps>,
    /// Reads the programs' log (`--datapath-log`), until the agent takes it.
    logger: Option<DatapathLogger>,
}

/// Reads the datapath's log records into the agent's log.
pub type DatapathLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// How containers' lo is given its program (`netiso-ebpf/src/container_lo_egress.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerLoopbackProgram {
    /// One program for all, which finds its container by the namespace's cookie
    /// (kernels whose tc programs may read it: 6.15 and later).
    Shared,
    /// A copy loaded per container, told its container at load time (older kernels:
    /// a whole object load per container).
    PerContainer,
}

impl Datapath {
    /// Loads the eBPF object, reusing the maps already pinned under `pin_root` (so
    /// counters survive agent restarts) and pinning new ones there. Pinned state of an
    /// older layout is upgraded in place: the new maps are built beside it, and the
    /// attachments move to them in [`Datapath::complete_upgrade`]. State this agent
    /// cannot take (a newer layout, a damaged one) is refused before anything changes.
    pub fn load(
        pin_root: &Path,
        log_level: DatapathLogLevel,
        public_mtu: u32,
    ) -> anyhow::Result<Self> {
        object::check_has_programs()?;
        let mut upgrade = None;
        match layout::inspect(pin_root)? {
            layout::Found::Nothing | layout::Found::Current => upgrade::remove_stale(pin_root)?,
            layout::Found::Swapped => {
                log::info!(
                    "completing an upgrade of {} that stopped after its swap",
                    pin_root.display()
                );
                upgrade::move_in(pin_root)?;
            }
            layout::Found::Older(version) => {
                upgrade = Some(upgrade::Upgrade::begin(pin_root, version)?);
            }
        }
        let maps_dir = upgrade
            .as_ref()
            .map_or(pin_root, upgrade::Upgrade::staging)
            .to_owned();
        let maps_made_at_load = layout::current_maps()
            .iter()
            .all(|map| !maps_dir.join(map.name).exists());
        let mut ebpf = object::load(&maps_dir, log_level, public_mtu)?;
        let mut maps = DatapathMaps::take(&mut ebpf)?;
        let state = match upgrade {
            Some(_) => LayoutState::Filling,
            None => LayoutState::Ready,
        };
        maps.layout
            .set(0, PinnedLayout::new(state), 0)
            .context("recording the pinned state's layout")?;
        let drop_events = Some(maps::DropEventMaps::take(&mut ebpf)?);
        let logger = match log_level {
            DatapathLogLevel::Off => None,
            _ => Some(
                aya_log::EbpfLogger::init(&mut ebpf)
                    .context("reading the datapath's log (aya-log)")?,
            ),
        };
        // The verifier refuses the shared program where tc programs cannot read a
        // namespace's cookie.
        let copy_loader = match attach::loaded_program(&mut ebpf, CONTAINER_LO_EGRESS_PROGRAM) {
            Ok(_) => None,
            Err(error) => {
                log::debug!("no shared loopback program: {error:#}");
                Some(object::CopyLoader::new(&maps_dir, log_level))
            }
        };
        let links = pin_root.join(LINKS_DIR);
        std::fs::create_dir_all(&links).with_context(|| format!("creating {}", links.display()))?;
        Ok(Self {
            ebpf,
            maps,
            pin_root: pin_root.to_owned(),
            maps_dir,
            upgrade,
            maps_made_at_load,
            log_level,
            attach_mode: AttachMode::for_running_kernel(),
            copy_loader,
            drop_events,
            logger,
        })
    }

    /// The datapath's log reader, if its logging is on (once).
    pub fn take_logger(&mut self) -> Option<DatapathLogger> {
        self.logger.take()
    }

    /// The drop events' maps, for the agent's drop monitor (once).
    pub fn take_drop_events(&mut self) -> Option<maps::DropEventMaps> {
        self.drop_events.take()
    }

    /// How containers' lo gets its program on this kernel.
    pub fn container_loopback_program(&self) -> ContainerLoopbackProgram {
        match self.copy_loader {
            None => ContainerLoopbackProgram::Shared,
            Some(_) => ContainerLoopbackProgram::PerContainer,
        }
    }

    /// Where this datapath's state is pinned.
    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// Where its maps are pinned now: the pin root, except during an upgrade.
    pub fn maps_dir(&self) -> &Path {
        &self.maps_dir
    }

    /// Whether older pinned state is being upgraded (attachments wait for
    /// [`Datapath::complete_upgrade`]).
    pub fn upgrading(&self) -> bool {
        self.upgrade.is_some()
    }

    /// Completes an upgrade of older pinned state, once the new maps hold every
    /// container (after recovery): copies the open echo conversations, swaps every
    /// attachment to the new programs, carries the counters over and moves the new
    /// pins in. Nothing to do (`None`) without an upgrade.
    pub fn complete_upgrade(&mut self) -> anyhow::Result<Option<UpgradeReport>> {
        let Some(mut upgrade) = self.upgrade.take() else {
            return Ok(None);
        };
        let conversations = upgrade.copy_echo_conversations()?;
        failpoints::hit("upgrade.filled")?;
        let deferred = std::mem::take(&mut upgrade.deferred);
        let mut containers = 0;
        for attachment in deferred {
            match attachment {
                upgrade::Deferred::PublicIface(iface) => {
                    self.attach_public_now(&iface)?;
                    failpoints::hit("upgrade.swapping")?;
                }
                upgrade::Deferred::HostLo(lo) => self.attach_host_lo_now(&lo)?,
                // One whose recovery failed after it was given its entries is gone.
                upgrade::Deferred::Container(container)
                    if nix::net::if_::if_indextoname(container.host_veth_index).is_err() =>
                {
                    log::debug!("{} is gone; nothing to swap", container.host_veth);
                }
                upgrade::Deferred::Container(container) => {
                    self.attach_container(&container)?;
                    containers += 1;
                }
            }
        }
        let carried = upgrade.carry_counters(&mut self.maps)?;
        self.maps
            .layout
            .set(0, PinnedLayout::new(LayoutState::Swapped), 0)?;
        failpoints::hit("upgrade.swapped")?;
        upgrade::move_in(&self.pin_root)?;
        self.maps
            .layout
            .set(0, PinnedLayout::new(LayoutState::Ready), 0)?;
        self.maps_dir.clone_from(&self.pin_root);
        if self.copy_loader.is_some() {
            self.copy_loader = Some(object::CopyLoader::new(&self.pin_root, self.log_level));
        }
        Ok(Some(upgrade.report(containers, carried, conversations)))
    }

    /// Attaches the programs to both directions of the public interface, or takes
    /// over the attachments a previous agent left (atomically: no packet is missed).
    /// Runs in the host's network namespace (the calling thread's).
    pub fn attach_public_iface(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        match self.upgrade.as_mut() {
            Some(upgrade) => upgrade
                .deferred
                .push(upgrade::Deferred::PublicIface(iface.to_owned())),
            None => self.attach_public_now(iface)?,
        }
        Ok(self.attach_mode)
    }

    fn attach_public_now(&mut self, iface: &str) -> anyhow::Result<()> {
        for (name, attach_type, pin) in [
            (
                PUBLIC_INGRESS_PROGRAM,
                TcAttachType::Ingress,
                "public-ingress",
            ),
            (PUBLIC_EGRESS_PROGRAM, TcAttachType::Egress, "public-egress"),
        ] {
            let link_pin = self.link_pin(pin);
            attach::attach_persistent(&mut self.ebpf, name, self.attach_mode, iface, attach_type, &link_pin)
                .with_context(|| {
                    format!("attaching {name} to {iface}; check that the interface exists (`ip link show {iface}`)")
                })?;
        }
        Ok(())
    }

    /// Attaches the program that steers host traffic for containers' ports to the
    /// host's loopback (or takes it over). Runs in the host's network namespace.
    pub fn attach_host_lo(&mut self, lo: &str) -> anyhow::Result<()> {
        match self.upgrade.as_mut() {
            Some(upgrade) => {
                upgrade
                    .deferred
                    .push(upgrade::Deferred::HostLo(lo.to_owned()));
                Ok(())
            }
            None => self.attach_host_lo_now(lo),
        }
    }

    fn attach_host_lo_now(&mut self, lo: &str) -> anyhow::Result<()> {
        let link_pin = self.link_pin("host-lo-ingress");
        attach::attach_persistent(
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

    /// Writes the host's addresses and interfaces for the programs, and the handle of
    /// the public interface's fq_codel whose flows they assign (0: none).
    pub fn configure(
        &mut self,
        host: &HostNetwork,
        egress_flows_qdisc: u32,
        delivery: Delivery,
    ) -> anyhow::Result<()> {
        let config = DatapathConfig {
            host_ipv4: host.ipv4.map(|a| a.octets()).unwrap_or_default(),
            host_ipv6: host.ipv6.map(|a| a.octets()).unwrap_or_default(),
            has_ipv4: u32::from(host.ipv4.is_some()),
            has_ipv6: u32::from(host.ipv6.is_some()),
            public_ifindex: host.public.index,
            host_lo_ifindex: host.lo_index,
            egress_flows_qdisc,
            host_mac: host.public.mac,
            deliver_through_veth: u8::from(delivery == Delivery::ThroughVeth),
            _pad: 0,
        };
        self.maps
            .config
            .set(0, config, 0)
            .context("writing the datapath configuration")
    }

    /// Which host ports (owned by no container) containers may reach through the
    /// host's address and loopback: those for which `closed` is false. Writes only
    /// what changed; returns how many ports are closed. Called once, at start.
    pub fn set_host_port_access(&mut self, closed: impl Fn(u16) -> bool) -> anyhow::Result<usize> {
        let mut count = 0;
        for port in 0..=u16::MAX {
            let wanted = if closed(port) {
                count += 1;
                HOST_PORT_CLOSED
            } else {
                0
            };
            let key = u32::from(port);
            // Maps this agent made are all zeros: no need to read 65536 entries.
            let written = if self.maps_made_at_load {
                0
            } else {
                self.maps.host_port_access.get(&key, 0)?
            };
            if written != wanted {
                self.maps
                    .host_port_access
                    .set(key, wanted, 0)
                    .context("writing which host ports containers reach")?;
            }
        }
        Ok(count)
    }

    /// Reads the public interface's counters, summed over CPUs.
    pub fn public_iface_counters(&self) -> anyhow::Result<PublicIfaceCounters> {
        PublicIfaceCounters::read(&self.maps.public_iface_counters)
    }
}
