//! A container in the datapath: its ports in the port map (which steers inbound
//! packets to it), its veth in the veth map, its namespace in the namespace map, its
//! programs on its veth (or netkit pair: see `netkit`), eth0 and lo (netlink
//! filters: see `attach::attach_filter`),
//! its shaping entry and its counters. Which ports it may have is the port ledger's
//! decision (`crate::ports::PortLedger`), taken before anything here is called.
use std::{io, path::PathBuf};

use anyhow::Context as _;
use aya::{maps::PerCpuValues, programs::TcAttachType};
use netiso_common::{
    CONTAINER_ETH0_INGRESS_PROGRAM, CONTAINER_LO_EGRESS_COPY_PROGRAM, CONTAINER_LO_EGRESS_PROGRAM,
    CONTAINER_NETKIT_PEER_PROGRAM, CONTAINER_VETH_INGRESS_PROGRAM, ContainerCounters,
    ContainerLoopback, ContainerPort, ContainerShaping, EchoIdRange, MAX_CONTAINERS, PortOwner,
};

use super::{Datapath, LINKS_DIR, attach, netkit, read_container_counters};
use crate::{
    failpoints,
    net::{ContainerDevice, container_network::ContainerNetwork, netns},
    ports::PortRange,
};

impl Datapath {
    /// Where agents before this one pinned the tcx links of a container's three
    /// attachments (containers' devices now get netlink filters: see
    /// [`attach::attach_filter`]).
    fn earlier_container_link_pins(&self, slot: u32) -> [PathBuf; 3] {
        ["veth", "eth0", "lo"].map(|at| self.link_pin(&format!("container-{slot}-{at}")))
    }

    /// Gives the container its ports in the datapath and attaches its programs (or,
    /// for a container a previous agent set up, takes them over without a gap and
    /// keeps its counters). Runs in the host's network namespace.
    pub fn add_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let slot = container.slot;
        // A container a previous agent already gave to the datapath keeps its
        // counters (they must never go backwards); a new one starts from zero.
        let adopting = self
            .maps
            .veth_containers
            .get(&container.host_veth_index, 0)
            .ok()
            == Some(slot);
        if !adopting {
            self.reset_container_counters(slot)?;
        }
        // Translations before owners: a published port never reaches the container
        // untranslated.
        self.set_port_mappings(container)?;
        let entry = PortOwner::new(slot, container.host_veth_index);
        for port in container
            .ports
            .iter()
            .chain(std::iter::once(&container.ephemeral_ports))
            .flat_map(PortRange::ports)
        {
            self.maps.port_owners.set(u32::from(port), entry, 0)?;
        }
        self.maps
            .veth_containers
            .insert(container.host_veth_index, slot, 0)?;
        // Its echo requests leave with identifiers from its ephemeral range.
        let echo_ids = EchoIdRange {
            begin: container.ephemeral_ports.begin,
            len: u16::try_from(container.ephemeral_ports.len()).unwrap_or(u16::MAX),
        };
        self.maps.container_echo_ids.set(slot, echo_ids, 0)?;
        if self.copy_loader.is_none() {
            let loopback = ContainerLoopback {
                slot,
                eth0_ifindex: container.container_eth0_index,
            };
            self.maps
                .container_netns
                .insert(container.netns_cookie, loopback, 0)?;
        }
        match self.upgrade.as_mut() {
            // Its programs move to the new maps with everyone else's, once they are
            // whole; until then the old programs serve it.
            Some(upgrade) => upgrade
                .deferred
                .push(super::upgrade::Deferred::Container(Box::new(
                    container.clone(),
                ))),
            None => self.attach_container(container)?,
        }
        Ok(())
    }

    /// Attaches the container's programs to its pair (a veth's host end's ingress, or
    /// a netkit pair's container end) and inside its namespace, replacing whatever
    /// netiso program was there.
    pub(super) fn attach_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        failpoints::hit("create.attach")?;
        match container.device {
            ContainerDevice::Veth => {
                let program =
                    attach::loaded_program(&mut self.ebpf, CONTAINER_VETH_INGRESS_PROGRAM)?;
                attach::attach_filter(program, &container.host_veth, TcAttachType::Ingress)
            }
            ContainerDevice::Netkit => {
                let program =
                    attach::loaded_program(&mut self.ebpf, CONTAINER_NETKIT_PEER_PROGRAM)?;
                netkit::attach_peer(program, container.host_veth_index)
            }
        }
        .with_context(|| format!("attaching the container program to {}", container.host_veth))?;
        failpoints::hit("create.attach_inside")?;
        self.attach_inside(container)?;
        // A container an earlier agent attached with tcx: its filters now run first,
        // so the links can go (unpinning detaches them).
        for pin in self.earlier_container_link_pins(container.slot) {
            remove_if_present(&pin)?;
        }
        Ok(())
    }

    /// Attaches the programs inside the container's namespace: eth0's, and lo's, the
    /// shared one or, on kernels without it, a copy of the object of the container's
    /// own (the copy can be dropped at once: its filter holds its program).
    fn attach_inside(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let eth0_index = container.container_eth0_index;
        let mut copy = match self.copy_loader.as_mut() {
            None => None,
            Some(loader) => {
                self.maps
                    .container_eth0_indexes
                    .set(container.slot, eth0_index, 0)?;
                Some(loader.load(container.slot)?)
            }
        };
        let ebpf = &mut self.ebpf;
        netns::run_in(&container.netns, || -> anyhow::Result<()> {
            let eth0 = nix::net::if_::if_indextoname(eth0_index)
                .context("finding the container's eth0")?
                .into_string()
                .map_err(|_| anyhow::anyhow!("the container's eth0 name is not UTF-8"))?;
            let program = attach::loaded_program(ebpf, CONTAINER_ETH0_INGRESS_PROGRAM)?;
            attach::attach_filter(program, &eth0, TcAttachType::Ingress).with_context(|| {
                format!("attaching {CONTAINER_ETH0_INGRESS_PROGRAM} to the container's {eth0}")
            })?;
            let program = match copy.as_mut() {
                None => attach::loaded_program(ebpf, CONTAINER_LO_EGRESS_PROGRAM)?,
                Some(copy) => attach::loaded_program(copy, CONTAINER_LO_EGRESS_COPY_PROGRAM)?,
            };
            attach::attach_filter(program, "lo", TcAttachType::Egress)
                .context("attaching the loopback program to the container's lo")?;
            // Agents before this one attached it to lo's ingress.
            attach::detach_netlink("lo", TcAttachType::Ingress);
            Ok(())
        })?
    }

    /// Writes the translations of the container's published ports (host port ↔ port
    /// inside).
    fn set_port_mappings(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        for mapping in &container.port_mappings {
            self.maps.port_translations.set(
                u32::from(mapping.host_port),
                mapping.container_port,
                0,
            )?;
            let inside = ContainerPort {
                slot: container.slot,
                port: mapping.container_port,
                _pad: 0,
            };
            self.maps
                .container_port_translations
                .insert(inside, mapping.host_port, 0)?;
        }
        Ok(())
    }

    /// Removes the translations of the container's published ports (after their
    /// owner entries are gone).
    fn clear_port_mappings_of(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        for mapping in &container.port_mappings {
            let host_port = u32::from(mapping.host_port);
            if self.maps.port_owners.get(&host_port, 0)?.slot().is_none() {
                self.maps.port_translations.set(host_port, 0, 0)?;
            }
            let inside = ContainerPort {
                slot: container.slot,
                port: mapping.container_port,
                _pad: 0,
            };
            let _ = self.maps.container_port_translations.remove(&inside);
        }
        Ok(())
    }

    /// Removes the translations of the slots to `forget` and those of host ports no
    /// container owns (after their owners are gone).
    fn clear_port_mappings(&mut self, forget: impl Fn(u32) -> bool) -> anyhow::Result<()> {
        let stale: Vec<ContainerPort> = self
            .maps
            .container_port_translations
            .keys()
            .filter_map(Result::ok)
            .filter(|key| forget(key.slot))
            .collect();
        for key in stale {
            let _ = self.maps.container_port_translations.remove(&key);
        }
        for port in 0..=u16::MAX {
            let translated = self.maps.port_translations.get(&u32::from(port), 0)? != 0;
            if translated
                && self
                    .maps
                    .port_owners
                    .get(&u32::from(port), 0)?
                    .slot()
                    .is_none()
            {
                self.maps.port_translations.set(u32::from(port), 0, 0)?;
            }
        }
        Ok(())
    }

    /// Changes a container's non-ephemeral ports live: new ports are steered to it
    /// first, then ports it no longer has go back to the host. Ports it keeps (and its
    /// ephemeral range) are not touched, so their connections never notice.
    pub fn update_ports(
        &mut self,
        container: &ContainerNetwork,
        ports: &[PortRange],
    ) -> anyhow::Result<()> {
        let keep = |port: u16| {
            container.ephemeral_ports.contains(port) || ports.iter().any(|r| r.contains(port))
        };
        let entry = PortOwner::new(container.slot, container.host_veth_index);
        for port in ports.iter().flat_map(PortRange::ports) {
            self.maps.port_owners.set(u32::from(port), entry, 0)?;
        }
        for port in container.ports.iter().flat_map(PortRange::ports) {
            if !keep(port) {
                self.maps
                    .port_owners
                    .set(u32::from(port), PortOwner::default(), 0)?;
            }
        }
        Ok(())
    }

    /// Forgets every container whose slot is not in `keep`: their ports, veth entries
    /// and pinned links (what a crash between creating and recording a container, or a
    /// lost state directory, leaves); and clears every port entry that `owner` (the
    /// ledger) does not give to its slot. Returns how many port entries were cleared.
    pub fn forget_containers_except(
        &mut self,
        keep: &[u32],
        owner_of: impl Fn(u16) -> Option<u32>,
    ) -> anyhow::Result<usize> {
        // Maps this agent made hold only what recovery put there: the sweep (some
        // 140 000 lookups) would find nothing.
        let cleared = if self.maps_made_at_load {
            0
        } else {
            self.clear_stale_map_entries(keep, owner_of)?
        };
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

    /// The map entries of [`Datapath::forget_containers_except`]; returns how many
    /// port entries were cleared.
    fn clear_stale_map_entries(
        &mut self,
        keep: &[u32],
        owner_of: impl Fn(u16) -> Option<u32>,
    ) -> anyhow::Result<usize> {
        let mut cleared = 0;
        for port in 0..=u16::MAX {
            let owner = self.maps.port_owners.get(&u32::from(port), 0)?;
            if owner
                .slot()
                .is_some_and(|slot| Some(slot) != owner_of(port))
            {
                self.maps
                    .port_owners
                    .set(u32::from(port), PortOwner::default(), 0)?;
                cleared += 1;
            }
        }
        let stale: Vec<u32> = self
            .maps
            .veth_containers
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, slot)| !keep.contains(slot))
            .map(|(ifindex, _)| ifindex)
            .collect();
        for ifindex in stale {
            let _ = self.maps.veth_containers.remove(&ifindex);
        }
        let stale: Vec<u64> = self
            .maps
            .container_netns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, entry)| !keep.contains(&entry.slot))
            .map(|(cookie, _)| cookie)
            .collect();
        for cookie in stale {
            let _ = self.maps.container_netns.remove(&cookie);
        }
        for slot in (0..MAX_CONTAINERS).filter(|slot| !keep.contains(slot)) {
            self.set_ingress_shaped(slot, false)?;
            self.set_egress_policer(slot, 0)?;
            if self.maps.container_echo_ids.get(&slot, 0)? != EchoIdRange::default() {
                self.maps
                    .container_echo_ids
                    .set(slot, EchoIdRange::default(), 0)?;
            }
        }
        self.clear_port_mappings(|slot| !keep.contains(&slot))?;
        Ok(cleared)
    }

    /// Takes the container's ports back and forgets its veth. Idempotent.
    pub fn remove_container(&mut self, container: &ContainerNetwork) -> anyhow::Result<()> {
        let slot = container.slot;
        // An adopted namespace outlives the container, and its lo must work without
        // us: its filters are removed there. (A namespace the agent made goes away
        // with its filters.)
        if container.adopted && container.netns.exists() {
            let eth0_index = container.container_eth0_index;
            netns::run_in(&container.netns, || {
                let eth0 = nix::net::if_::if_indextoname(eth0_index)
                    .ok()
                    .and_then(|name| name.into_string().ok());
                attach::detach_netlink("lo", TcAttachType::Egress);
                if let Some(eth0) = eth0 {
                    attach::detach_netlink(&eth0, TcAttachType::Ingress);
                }
            })?;
        }
        gone_or_removed(self.maps.container_netns.remove(&container.netns_cookie))
            .context("removing the container's namespace entry")?;
        for port in container
            .ports
            .iter()
            .chain(std::iter::once(&container.ephemeral_ports))
            .flat_map(PortRange::ports)
        {
            if self.maps.port_owners.get(&u32::from(port), 0)?.slot() == Some(slot) {
                self.maps
                    .port_owners
                    .set(u32::from(port), PortOwner::default(), 0)?;
            }
        }
        self.clear_port_mappings_of(container)?;
        gone_or_removed(self.maps.veth_containers.remove(&container.host_veth_index))
            .context("removing the container's veth entry")?;
        self.maps
            .container_echo_ids
            .set(slot, EchoIdRange::default(), 0)?;
        self.set_egress_policer(slot, 0)?;
        self.update_shaping(slot, |entry| *entry = ContainerShaping::default())
    }

    /// Whether container `slot`'s inbound packets go through the qdiscs of the host
    /// end of its veth (its ingress limit) or straight into it.
    pub fn set_ingress_shaped(&mut self, slot: u32, shaped: bool) -> anyhow::Result<()> {
        self.update_shaping(slot, |entry| entry.ingress_shaped = u32::from(shaped))
    }

    /// Polices what container `slot` sends at `window_budget` bytes per
    /// `POLICER_WINDOW_NS` (0: not at all), behind the htb on its own eth0.
    pub fn set_egress_policer(&mut self, slot: u32, window_budget: u64) -> anyhow::Result<()> {
        let mut policer = self.maps.egress_policers.get(&slot, 0)?;
        if policer.window_budget != window_budget {
            policer.window_budget = window_budget;
            self.maps
                .egress_policers
                .set(slot, policer, 0)
                .context("setting the container's egress policer")?;
        }
        Ok(())
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
        let old = self.maps.container_shaping.get(&slot, 0)?;
        let mut new = old;
        change(&mut new);
        if new != old {
            self.maps
                .container_shaping
                .set(slot, new, 0)
                .context("setting the container's shaping")?;
        }
        Ok(())
    }

    /// The counters of container `slot`, summed over CPUs.
    pub fn container_counters(&self, slot: u32) -> anyhow::Result<ContainerCounters> {
        read_container_counters(&self.maps.container_counters, slot)
    }

    fn reset_container_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zeros = PerCpuValues::try_from(vec![ContainerCounters::default(); cpus])?;
        self.maps.container_counters.set(slot, zeros, 0)?;
        Ok(())
    }
}

impl Datapath {
    /// What of the container's datapath entries is missing or wrong, as sentences:
    /// its ports and translations, its veth and namespace entries. (Its filters are
    /// looked at by the caller, on the devices.)
    pub fn check_container(&self, container: &ContainerNetwork) -> anyhow::Result<Vec<String>> {
        let slot = container.slot;
        let mut problems = Vec::new();
        let owned = container
            .ports
            .iter()
            .chain(std::iter::once(&container.ephemeral_ports))
            .flat_map(PortRange::ports);
        let mut strays = 0;
        for port in owned {
            if self.maps.port_owners.get(&u32::from(port), 0)?.slot() != Some(slot) {
                strays += 1;
            }
        }
        if strays > 0 {
            problems.push(format!("{strays} of its ports are not steered to it"));
        }
        for mapping in &container.port_mappings {
            let inside = ContainerPort {
                slot,
                port: mapping.container_port,
                _pad: 0,
            };
            let host_port = u32::from(mapping.host_port);
            let inbound = self.maps.port_translations.get(&host_port, 0)?;
            let outbound = self.maps.container_port_translations.get(&inside, 0).ok();
            if inbound != mapping.container_port || outbound != Some(mapping.host_port) {
                problems.push(format!(
                    "port {} is not translated to {}",
                    mapping.host_port, mapping.container_port
                ));
            }
        }
        if self
            .maps
            .veth_containers
            .get(&container.host_veth_index, 0)
            .ok()
            != Some(slot)
        {
            problems.push(format!(
                "its veth {} is not in the veth map",
                container.host_veth
            ));
        }
        if self.copy_loader.is_none()
            && self
                .maps
                .container_netns
                .get(&container.netns_cookie, 0)
                .ok()
                .is_none_or(|entry| entry.slot != slot)
        {
            problems.push("its namespace is not in the namespace map".to_owned());
        }
        Ok(problems)
    }
}

/// Removes the file at `path`; one already gone is fine.
fn remove_if_present(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// A map removal, where an entry already gone is fine (removals are idempotent).
fn gone_or_removed(removal: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match removal {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
