//! The container manager: owns the datapath, the port ledger and the records, and
//! creates, updates and destroys containers. It runs on a thread of its own in the
//! host's network namespace (see [`super::handle`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::Context as _;

use super::{
    model::{ContainerInfo, CreateRequest, HostInfo, UpdateRequest, format_mac},
    records::{Intent, Records},
    shaping::{Shaping, check_bandwidth},
};
use crate::{
    datapath::Datapath,
    failpoints,
    failure::refuse,
    net::{
        NetlinkSocket,
        container_network::{self, ContainerNetwork, ContainerSpec},
        host::HostNetwork,
        netns,
        veth_reaper::VethReaper,
    },
    ports::{self, PortLedger},
    tc::{HtbConfig, htb},
};

/// A step of an update that changed the kernel, to undo if a later one fails.
enum UpdateStep {
    Ports,
    Shape,
}

pub(super) struct Managed {
    pub(super) info: ContainerInfo,
    pub(super) network: ContainerNetwork,
}

/// Owns everything that changes when containers come and go.
pub struct Manager {
    pub(super) datapath: Datapath,
    pub(super) host: HostNetwork,
    pub(super) ledger: PortLedger,
    pub(super) shaping: Shaping,
    pub(super) containers: BTreeMap<String, Managed>,
    pub(super) records: Records,
    /// Veths of containers recorded by a newer netiso: never touched.
    pub(super) foreign_veths: Vec<String>,
    /// Deletes destroyed containers' veth pairs in the background.
    reaper: VethReaper,
}

/// The namespace a create request adopts, if any: a path, or a process's.
fn adopted_netns(request: &CreateRequest) -> anyhow::Result<Option<PathBuf>> {
    Ok(match (&request.netns, request.pid) {
        (Some(_), Some(_)) => refuse!(Invalid, "pass --netns or --pid, not both"),
        (Some(path), None) => Some(path.clone()),
        (None, Some(pid)) => Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        (None, None) => None,
    })
}

/// The lowest datapath slot none of `used` has and whose veth name is not `taken`
/// (a link of that name left by someone else must not block creates).
fn free_slot(
    used: &BTreeSet<u32>,
    mut taken: impl FnMut(u32) -> anyhow::Result<bool>,
) -> anyhow::Result<u32> {
    for slot in (0..netiso_common::MAX_CONTAINERS).filter(|slot| !used.contains(slot)) {
        if !taken(slot)? {
            return Ok(slot);
        }
    }
    refuse!(
        Unavailable,
        "too many containers: every datapath slot is in use; destroy a container first"
    )
}

fn check_cpus(cpus: f64) -> anyhow::Result<()> {
    if !(cpus.is_finite() && cpus >= 0.0) {
        refuse!(
            Invalid,
            "--cpus must be a number of CPUs, 0 or more; got {cpus}"
        );
    }
    Ok(())
}

impl Manager {
    pub fn new(
        datapath: Datapath,
        host: HostNetwork,
        ledger: PortLedger,
        shaping: Shaping,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            datapath,
            host,
            ledger,
            shaping,
            containers: BTreeMap::new(),
            records: Records::open(state_dir)?,
            foreign_veths: Vec::new(),
            reaper: VethReaper::start().context("starting the veth reaper thread")?,
        })
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        self.containers.values().map(|m| m.info.clone()).collect()
    }

    /// Container `id`, or a refusal naming it.
    pub fn get(&self, id: &str) -> anyhow::Result<ContainerInfo> {
        match self.containers.get(id) {
            Some(managed) => Ok(managed.info.clone()),
            None => refuse!(NotFound, "no container {id}"),
        }
    }

    /// What a container is given of the host: the shared addresses, MAC and MTU, and
    /// the gateways containers route through.
    pub fn host(&self) -> HostInfo {
        HostInfo {
            interface: self.host.public.name.clone(),
            mac: format_mac(self.host.public.mac),
            mtu: self.host.public.mtu,
            ipv4: self.host.ipv4,
            ipv6: self.host.ipv6,
            gateway_ipv4: container_network::CONTAINER_GATEWAY_V4,
            gateway_ipv6: container_network::CONTAINER_GATEWAY_V6,
            container_device: self.host.container_device,
            containers: self.containers.len(),
        }
    }

    /// The name of a container's interface (records from before it could be chosen
    /// have none: the public interface's).
    pub fn interface_of<'a>(&'a self, info: &'a ContainerInfo) -> &'a str {
        info.interface
            .as_deref()
            .unwrap_or(self.host.public.name.as_str())
    }

    /// A slot for a new container: free in the datapath, its veth name unused (and
    /// not about to be deleted).
    fn free_slot(&self) -> anyhow::Result<u32> {
        let mut used: BTreeSet<u32> = self.containers.values().map(|m| m.network.slot).collect();
        used.extend(self.reaper.pending());
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        free_slot(&used, |slot| {
            let name = container_network::host_veth_name(slot);
            let taken = socket.link(&name)?.is_some();
            if taken {
                log::warn!("{name} exists but belongs to no container; leaving it alone");
            }
            Ok(taken)
        })
    }

    /// Creates a container; on any failure nothing of it is left behind.
    pub fn create(&mut self, request: CreateRequest) -> anyhow::Result<ContainerInfo> {
        container_network::check_id(&request.id)?;
        if self.containers.contains_key(&request.id) {
            refuse!(
                Conflict,
                "container {} already exists; destroy it first or choose another id",
                request.id
            );
        }
        if let Some(cpus) = request.cpus {
            check_cpus(cpus)?;
        }
        if let Some(bandwidth) = &request.bandwidth {
            check_bandwidth(bandwidth)?;
        }
        let netns = adopted_netns(&request)?;
        let interface = request
            .interface
            .clone()
            .unwrap_or_else(|| self.host.public.name.clone());
        container_network::check_interface_name(&interface)?;
        self.ledger.check(&request.id, &request.ports)?;
        ports::check_mappings(&request.port_mappings, &request.ports, None)?;
        let slot = self.free_slot()?;
        let ephemeral = self.ledger.reserve(&request.id, &request.ports)?;
        let mappings =
            ports::check_mappings(&request.port_mappings, &request.ports, Some(ephemeral));
        if let Err(error) = mappings {
            self.ledger.release(&request.id);
            return Err(error);
        }
        let spec = ContainerSpec {
            id: request.id.clone(),
            netns: netns.clone(),
            slot,
            interface,
            device: self.host.container_device,
            ephemeral,
            ports: request.ports.clone(),
            port_mappings: request.port_mappings.clone(),
        };
        // Written before the first kernel change: after a crash, recovery finds what
        // this create had made by these names and removes it.
        let intent = Intent {
            id: request.id.clone(),
            host_veth: container_network::host_veth_name(slot),
        };
        let built = self
            .records
            .begin(&intent)
            .and_then(|()| self.build(&spec, request));
        if built.is_err() {
            self.ledger.release(&spec.id);
        }
        if let Err(error) = self.records.end(&spec.id) {
            log::warn!("{error:#}");
        }
        built
    }

    fn build(
        &mut self,
        spec: &ContainerSpec,
        request: CreateRequest,
    ) -> anyhow::Result<ContainerInfo> {
        let network = container_network::create(&self.host, spec)?;
        let egress_flow = self.take_egress_flow(&spec.id);
        let cpus = request.cpus;
        let (egress_limit, ingress_limit) =
            self.shaping.new_limits(cpus, request.bandwidth.as_ref());
        let info = ContainerInfo {
            id: spec.id.clone(),
            netns: network.netns.clone(),
            ephemeral_ports: spec.ephemeral,
            ports: spec.ports.clone(),
            port_mappings: spec.port_mappings.clone(),
            host_veth: network.host_veth.clone(),
            device: network.device,
            adopted: spec.netns.is_some(),
            interface: Some(spec.interface.clone()),
            attachment: request.attachment,
            bandwidth: request.bandwidth,
            labels: request.labels,
            cpus,
            egress_limit,
            ingress_limit,
            egress_flow,
            previous_sysctls: network.previous_sysctls.clone(),
        };
        let added = failpoints::hit("create.datapath")
            .and_then(|()| self.datapath.add_container(&network))
            .and_then(|()| self.set_egress_flow(network.slot, egress_flow))
            .and_then(|()| failpoints::hit("create.shape"))
            .and_then(|()| match (&info.egress_limit, &info.ingress_limit) {
                (None, None) => Ok(()),
                (egress, ingress) => self.shape(&network, egress.as_ref(), ingress.as_ref()),
            })
            .and_then(|()| failpoints::hit("create.record"))
            .and_then(|()| self.records.write(&info))
            .and_then(|()| failpoints::hit("create.done"));
        if let Err(error) = added {
            self.give_back_egress_flow(egress_flow);
            let _ = self.datapath.remove_container(&network);
            let _ = container_network::destroy(&network, &self.reaper);
            let _ = self.records.remove(&spec.id);
            return Err(error);
        }
        self.containers.insert(
            spec.id.clone(),
            Managed {
                info: info.clone(),
                network,
            },
        );
        Ok(info)
    }

    /// Destroys a container and everything it had. Destroying an unknown container is
    /// not an error (it may be gone already). The container is forgotten only once all
    /// of it is gone: after a failure it is still listed, and a retry finishes the job.
    pub fn destroy(&mut self, id: &str) -> anyhow::Result<()> {
        let Some(managed) = self.containers.get(id) else {
            return Ok(());
        };
        let network = managed.network.clone();
        failpoints::hit("destroy.datapath")?;
        self.datapath.remove_container(&network)?;
        container_network::destroy(&network, &self.reaper)?;
        failpoints::hit("destroy.record")?;
        self.records.remove(id)?;
        let managed = self.containers.remove(id).expect("looked up above");
        self.ledger.release(id);
        self.give_back_egress_flow(managed.info.egress_flow);
        Ok(())
    }

    /// Gives a container a new set of non-ephemeral ports and/or a new number of CPUs
    /// (which rates per CPU follow), live. Connections on ports it keeps are not
    /// disturbed. Everything is checked before anything changes, and a failure on the
    /// way puts back what had changed: the container, the datapath, the ledger and the
    /// record agree before and after, whatever the answer.
    pub fn update(&mut self, id: &str, update: UpdateRequest) -> anyhow::Result<ContainerInfo> {
        let Some(managed) = self.containers.get(id) else {
            refuse!(NotFound, "no container {id}; see `netiso container list`");
        };
        let (old_network, old) = (managed.network.clone(), managed.info.clone());
        if let Some(ports) = &update.ports {
            self.ledger.check(id, ports)?;
            // Published host ports stay, and container ports stay the container's.
            ports::check_mappings(&old.port_mappings, ports, Some(old.ephemeral_ports))?;
        }
        if let Some(cpus) = update.cpus {
            check_cpus(cpus)?;
        }
        let mut new = old.clone();
        let mut network = old_network.clone();
        if let Some(ports) = update.ports {
            new.ports.clone_from(&ports);
            network.ports = ports;
        }
        if let Some(cpus) = update.cpus {
            let (egress, ingress) = self.shaping.existing_limits(
                Some(cpus),
                old.ingress_limit.is_some(),
                old.bandwidth.as_ref(),
            );
            (new.cpus, new.egress_limit, new.ingress_limit) = (Some(cpus), egress, ingress);
        }
        if new == old {
            return Ok(new);
        }
        let reshape =
            (&new.egress_limit, &new.ingress_limit) != (&old.egress_limit, &old.ingress_limit);
        let mut applied = Vec::new();
        let result = self.apply_update(&old_network, &network, &new, reshape, &mut applied);
        if let Err(error) = result {
            // Undo in reverse; what cannot be undone is logged (the record still
            // holds the old container, which recovery would rebuild).
            for step in applied.into_iter().rev() {
                let undone = match step {
                    UpdateStep::Ports => self.datapath.update_ports(&network, &old.ports),
                    UpdateStep::Shape => self.shape(
                        &old_network,
                        old.egress_limit.as_ref(),
                        old.ingress_limit.as_ref(),
                    ),
                };
                if let Err(undo) = undone {
                    log::error!("container {id}: undoing a failed update: {undo:#}");
                }
            }
            return Err(error);
        }
        self.ledger.replace(id, &new.ports)?;
        let managed = self.containers.get_mut(id).expect("looked up above");
        managed.network = network;
        managed.info = new.clone();
        Ok(new)
    }

    /// The kernel and disk side of an update; `applied` tells what to undo.
    fn apply_update(
        &mut self,
        old_network: &ContainerNetwork,
        network: &ContainerNetwork,
        new: &ContainerInfo,
        reshape: bool,
        applied: &mut Vec<UpdateStep>,
    ) -> anyhow::Result<()> {
        if network.ports != old_network.ports {
            failpoints::hit("update.ports")?;
            applied.push(UpdateStep::Ports);
            self.datapath.update_ports(old_network, &network.ports)?;
        }
        if reshape {
            failpoints::hit("update.shape")?;
            applied.push(UpdateStep::Shape);
            self.shape(
                network,
                new.egress_limit.as_ref(),
                new.ingress_limit.as_ref(),
            )?;
        }
        failpoints::hit("update.record")?;
        self.records.write(new)?;
        failpoints::hit("update.done")
    }

    /// A free flow for container `id`; with none left it shares flows by hash, as
    /// every container would without unique flows.
    pub(super) fn take_egress_flow(&mut self, id: &str) -> Option<u32> {
        let flows = self.shaping.egress_flows.as_mut()?;
        let flow = flows.take();
        if flow.is_none() {
            log::warn!(
                "container {id}: all {} flows of the public interface's fq_codel are in use; it shares flows with others",
                flows.qdisc.flows
            );
        }
        flow
    }

    pub(super) fn give_back_egress_flow(&mut self, flow: Option<u32>) {
        if let (Some(flows), Some(flow)) = (self.shaping.egress_flows.as_mut(), flow) {
            flows.give_back(flow);
        }
    }

    /// Tells the datapath which flow the container's packets leave in.
    pub(super) fn set_egress_flow(&mut self, slot: u32, flow: Option<u32>) -> anyhow::Result<()> {
        let classid = match (&self.shaping.egress_flows, flow) {
            (Some(flows), Some(flow)) => flows.qdisc.classid(flow),
            _ => 0,
        };
        self.datapath.set_egress_flow(slot, classid)
    }

    /// Shapes the container's two directions (`None`: not limited).
    pub(super) fn shape(
        &mut self,
        network: &ContainerNetwork,
        egress: Option<&HtbConfig>,
        ingress: Option<&HtbConfig>,
    ) -> anyhow::Result<()> {
        let fq_codel = self.shaping.fq_codel;
        let eth0 = network.container_eth0_index;
        // The host side enforces the egress limit too, for traffic that skips the
        // container's own qdiscs; set before the htb, cleared after it.
        let budget = egress.map_or(0, |e| e.policer_budget(netiso_common::POLICER_WINDOW_NS));
        if budget != 0 {
            self.datapath.set_egress_policer(network.slot, budget)?;
        }
        netns::run_in(&network.netns, || {
            let mut socket = NetlinkSocket::route()?;
            htb::limit_gso(&mut socket, eth0, htb::gso_max_segs(egress.map(|e| e.rate)))?;
            htb::apply(&mut socket, eth0, egress, fq_codel)
        })?
        .context("shaping the container's egress")?;
        if budget == 0 {
            self.datapath.set_egress_policer(network.slot, 0)?;
        }
        let mut socket = NetlinkSocket::route()?;
        // Packets are sent through the qdiscs only once they exist, and no longer
        // before they go.
        if ingress.is_none() {
            self.datapath.set_ingress_shaped(network.slot, false)?;
        }
        htb::apply(&mut socket, network.host_veth_index, ingress, fq_codel)
            .context("shaping the container's ingress")?;
        if ingress.is_some() {
            self.datapath.set_ingress_shaped(network.slot, true)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    #[test]
    fn a_request_adopts_a_path_or_a_process_namespace_not_both() {
        let mut request = CreateRequest::default();
        assert_eq!(adopted_netns(&request).unwrap(), None);
        request.pid = Some(42);
        assert_eq!(
            adopted_netns(&request).unwrap(),
            Some(PathBuf::from("/proc/42/ns/net"))
        );
        request.netns = Some("/run/netns/x".into());
        assert_eq!(
            adopted_netns(&request).unwrap_err().to_string(),
            "pass --netns or --pid, not both"
        );
        request.pid = None;
        assert_eq!(
            adopted_netns(&request).unwrap(),
            Some(PathBuf::from("/run/netns/x"))
        );
    }

    #[test]
    fn slots_are_the_lowest_free_ones_whose_names_are_free() {
        let free = |_| Ok(false);
        assert_eq!(free_slot(&BTreeSet::new(), free).unwrap(), 0);
        assert_eq!(free_slot(&BTreeSet::from([0, 1, 3]), free).unwrap(), 2);
        // netiso2 is someone else's link: skipped.
        let taken = |slot| Ok(slot == 2);
        assert_eq!(free_slot(&BTreeSet::from([0, 1, 3]), taken).unwrap(), 4);
        let all: BTreeSet<u32> = (0..netiso_common::MAX_CONTAINERS).collect();
        let full = free_slot(&all, free).unwrap_err();
        assert_eq!(Failure::of(&full), Failure::Unavailable);
    }

    #[test]
    fn cpus_must_be_a_number_of_cpus() {
        assert!(check_cpus(0.0).is_ok());
        assert!(check_cpus(2.5).is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(
                check_cpus(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("--cpus must be a number of CPUs")
            );
        }
    }
}
