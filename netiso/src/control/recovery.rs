//! Taking over after a restart: containers recorded in the state directory whose
//! namespace and veth still exist are adopted (the datapath never stopped serving
//! them); what no record explains is removed.
use std::{collections::BTreeSet, fs};

use anyhow::{Context as _, bail};

use super::{
    manager::{Managed, Manager},
    model::ContainerInfo,
};
use crate::{
    net::{
        NetlinkSocket,
        container_network::{self, ContainerNetwork},
        netns, sysctl,
    },
    ports::Restored,
};

impl Manager {
    /// Takes over the containers recorded in the state directory whose namespace and
    /// veth still exist, and removes what no record explains: half-made containers,
    /// orphaned namespaces, veths, map entries and pinned links. Returns (recovered,
    /// removed) counts.
    pub fn recover(&mut self) -> anyhow::Result<(usize, usize)> {
        let mut removed = 0;
        let intents = self.records.take_intents().unwrap_or_else(|error| {
            log::warn!("{error:#}");
            Vec::new()
        });
        for intent in intents {
            log::warn!(
                "container {} was being created when the agent stopped; removing what it had",
                intent.id
            );
            let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
            socket.delete_link_named(&intent.host_veth)?;
            container_network::destroy_namespace(&intent.id)?;
            removed += 1;
        }
        let recorded = self.records.read_all()?;
        self.foreign_veths = recorded.foreign_veths;
        for info in recorded.records {
            if let Err(error) = self.recover_one(&info) {
                log::warn!(
                    "container {} cannot be recovered ({error:#}); removing what is left of it",
                    info.id
                );
                self.ledger.release(&info.id);
                remove_leftovers(&info);
                let _ = self.records.remove(&info.id);
                removed += 1;
            }
        }
        removed += self.remove_orphans()?;
        // Every port entry must be the ledger's: a crash during an update may have
        // left ports steered to a container that does not have them.
        let mut owners = vec![None; usize::from(u16::MAX) + 1];
        for managed in self.containers.values() {
            let network = &managed.network;
            for port in network
                .ports
                .iter()
                .chain([&network.ephemeral_ports])
                .flat_map(crate::ports::PortRange::ports)
            {
                owners[usize::from(port)] = Some(network.slot);
            }
        }
        let keep: Vec<u32> = self.containers.values().map(|m| m.network.slot).collect();
        self.datapath
            .forget_containers_except(&keep, |port| owners[usize::from(port)])?;
        // Older pinned state: every container is in the new maps now, so the
        // programs can move to them.
        if let Some(report) = self.datapath.complete_upgrade()? {
            log::info!(
                "pinned state upgraded in place from layout {} to {} in {} ms: the programs of the public interface, lo and {} containers swapped, counters of {} containers carried over, {} echo conversations kept",
                report.from,
                report.to,
                report.took.as_millis(),
                report.containers,
                report.counters_carried,
                report.echo_conversations
            );
        }
        Ok((self.containers.len(), removed))
    }

    fn recover_one(&mut self, info: &ContainerInfo) -> anyhow::Result<()> {
        let slot = info
            .slot()
            .with_context(|| format!("veth name {} has no slot", info.host_veth))?;
        if !info.netns.exists() {
            bail!("its namespace {} is gone", info.netns.display());
        }
        let mut network = container_network::recover(
            self.interface_of(info),
            &info.id,
            slot,
            &info.netns,
            &info.host_veth,
            info.adopted,
        )?;
        // Ports another recovered container holds stay with it; this one keeps the rest
        // (a conflict is reported, never a reason to delete a container).
        let restored = self
            .ledger
            .restore(&info.id, info.ephemeral_ports, &info.ports)?;
        for warning in &restored.warnings {
            log::warn!("container {}: {warning}", info.id);
        }
        let adopted = self.adopt_recovered(info, &mut network, restored);
        if adopted.is_err() {
            self.ledger.release(&info.id);
        }
        adopted
    }

    /// Gives a recovered container its datapath entries, shaping and flow, and
    /// records what changed since its record was written.
    fn adopt_recovered(
        &mut self,
        recorded: &ContainerInfo,
        network: &mut ContainerNetwork,
        restored: Restored,
    ) -> anyhow::Result<()> {
        let mut info = recorded.clone();
        if restored.ephemeral != info.ephemeral_ports {
            let range = format!("{} {}", restored.ephemeral.begin, restored.ephemeral.end);
            netns::run_in(&info.netns, || {
                sysctl::write("net.ipv4.ip_local_port_range", &range)
            })??;
        }
        (info.ephemeral_ports, info.ports) = (restored.ephemeral, restored.ports);
        // The kernel knows the pair's kind (records before netkit do not say).
        info.device = network.device;
        // A published host port another container kept is no longer this one's.
        let kept = |port: u16| info.ports.iter().any(|r| r.contains(port));
        info.port_mappings.retain(|m| kept(m.host_port));
        network.ephemeral_ports = info.ephemeral_ports;
        network.ports.clone_from(&info.ports);
        network.port_mappings.clone_from(&info.port_mappings);
        network.previous_sysctls.clone_from(&info.previous_sysctls);
        self.datapath.add_container(network)?;
        // This agent's flags may differ from the last one's (Mesos's Upgrade test).
        let (egress, ingress) = self.shaping.existing_limits(
            info.cpus,
            info.ingress_limit.is_some(),
            info.bandwidth.as_ref(),
        );
        self.shape(network, egress.as_ref(), ingress.as_ref())?;
        let flow = self.recover_egress_flow(&info);
        (info.egress_limit, info.ingress_limit, info.egress_flow) = (egress, ingress, flow);
        let kept = self.set_egress_flow(network.slot, flow);
        if kept.is_ok() && info != *recorded {
            // A record that cannot be updated (a read-only or full disk) is no reason
            // to lose the container: the next agent recovers it the same way.
            if let Err(error) = self.records.write(&info) {
                log::warn!("container {}: {error:#}", info.id);
            }
        }
        if let Err(error) = kept {
            self.give_back_egress_flow(flow);
            return Err(error);
        }
        self.containers.insert(
            info.id.clone(),
            Managed {
                info,
                network: network.clone(),
            },
        );
        Ok(())
    }

    /// The flow a recovered container keeps: its own if this agent has unique flows
    /// and that flow is free, else a new one (the flags or the qdisc changed).
    fn recover_egress_flow(&mut self, info: &ContainerInfo) -> Option<u32> {
        let flows = self.shaping.egress_flows.as_mut()?;
        match info.egress_flow {
            Some(flow) if flows.take_exact(flow) => Some(flow),
            _ => self.take_egress_flow(&info.id),
        }
    }

    /// Host-side veths `netiso<slot>` that belong to no recovered container, and the
    /// namespaces named `netiso-<id>` at their other end. (Only those: namespaces are
    /// matched through the veth's peer, so another agent's containers, such as in a
    /// neighbouring test lab, are never touched.)
    fn remove_orphans(&self) -> anyhow::Result<usize> {
        let known: BTreeSet<&str> = self
            .containers
            .values()
            .map(|m| m.info.host_veth.as_str())
            .chain(self.foreign_veths.iter().map(String::as_str))
            .collect();
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        let orphans: Vec<_> = socket
            .links()?
            .into_iter()
            .filter(|link| {
                container_network::is_host_veth_name(&link.name)
                    && !known.contains(link.name.as_str())
            })
            .collect();
        let peer_ids: BTreeSet<i32> = orphans
            .iter()
            .filter_map(|link| link.peer.map(|(nsid, _)| nsid))
            .collect();
        let mut namespaces = Vec::new();
        for entry in fs::read_dir(netns::NETNS_RUN_DIR)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let known_netns = self
                .containers
                .values()
                .any(|m| m.info.netns == entry.path());
            if !name.starts_with(container_network::NETNS_PREFIX) || known_netns {
                continue;
            }
            let Ok(file) = fs::File::open(entry.path()) else {
                continue;
            };
            // A name another agent is binding right now is no namespace yet: not ours.
            let nsid = socket.nsid_of(&file).unwrap_or_else(|error| {
                log::debug!("{name}: {error:#}; left alone");
                None
            });
            if nsid.is_some_and(|id| peer_ids.contains(&id)) {
                namespaces.push(name);
            }
        }
        for veth in &orphans {
            socket.delete_link(veth.index)?;
            log::info!("removed orphaned veth {}", veth.name);
        }
        for name in &namespaces {
            log::info!("removing orphaned namespace {name}");
            netns::delete_named(name)?;
        }
        Ok(orphans.len() + namespaces.len())
    }
}

/// Removes the veth and namespace name of a container that cannot be recovered, and
/// puts back an adopted namespace's sysctls.
fn remove_leftovers(info: &ContainerInfo) {
    if let Ok(mut socket) = NetlinkSocket::route() {
        let _ = socket.delete_link_named(&info.host_veth);
    }
    if !info.previous_sysctls.is_empty() && info.netns.exists() {
        let _ = netns::run_in(&info.netns, || sysctl::restore(&info.previous_sysctls));
    }
    let _ = container_network::destroy_namespace(&info.id);
}
