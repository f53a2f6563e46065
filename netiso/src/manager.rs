//! The container manager: owns the datapath and the port allocations, creates and
//! destroys containers, and records them in the state directory. It runs on a thread
//! of its own in the host's network namespace; the control API sends it requests.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    config::PortConfig,
    container::{self, ContainerNetwork, ContainerSpec, HostNetwork},
    datapath::Datapath,
    egress_flows::EgressFlows,
    netlink_sync::NetlinkSocket,
    ports::PortRange,
    rate_limits::RatePolicy,
    traffic_control::{self, HtbConfig},
};

/// What `container create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    /// Non-ephemeral ports, a subset of the agent's `ports` resource.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Adopt this network namespace instead of making one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Adopt the network namespace of this process.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// CPUs of the container, for rate limits per CPU.
    #[serde(default)]
    pub cpus: Option<f64>,
}

/// A container as the API shows it and the state directory records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Bind mount of its network namespace (`ip netns exec netiso-<id> …` works).
    pub netns: PathBuf,
    /// Inclusive, like Mesos's `net_ephemeral_ports`.
    pub ephemeral_ports: PortRange,
    pub ports: Vec<PortRange>,
    pub host_veth: String,
    /// Whether the namespace was adopted (it outlives the container).
    pub adopted: bool,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// The shaping of what the container sends (htb on its eth0), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_limit: Option<HtbConfig>,
    /// The shaping of what it receives (htb on the host end of its veth), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_limit: Option<HtbConfig>,
    /// Its own flow of the public interface's fq_codel (unique egress flows), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_flow: Option<u32>,
}

impl ContainerInfo {
    /// The container's index in the datapath's maps, from its veth's name.
    pub fn slot(&self) -> Option<u32> {
        self.host_veth
            .strip_prefix(container::HOST_VETH_PREFIX)
            .and_then(|n| n.parse().ok())
    }
}

struct Managed {
    info: ContainerInfo,
    network: ContainerNetwork,
}

/// Owns everything that changes when containers come and go.
pub struct Manager {
    datapath: Datapath,
    host: HostNetwork,
    ports: PortConfig,
    shaping: Shaping,
    containers: BTreeMap<String, Managed>,
    state_dir: PathBuf,
}

/// How containers are shaped: the rate policy, whether the kernel has fq_codel for
/// the limits' leaves, and the flows containers get with unique egress flows.
#[derive(Clone, Debug, Default)]
pub struct Shaping {
    pub rates: RatePolicy,
    pub fq_codel: bool,
    pub egress_flows: Option<EgressFlows>,
}

impl Manager {
    pub fn new(
        datapath: Datapath,
        host: HostNetwork,
        ports: PortConfig,
        shaping: Shaping,
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let dir = state_dir.join("containers");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            datapath,
            host,
            ports,
            shaping,
            containers: BTreeMap::new(),
            state_dir: state_dir.to_owned(),
        })
    }

    /// Takes over the containers recorded in the state directory whose namespace and
    /// veth still exist (the datapath never stopped serving them), and removes what no
    /// record explains: half-made containers, orphaned namespaces, veths, map entries
    /// and pinned links. Returns (recovered, removed) counts.
    pub fn recover(&mut self) -> anyhow::Result<(usize, usize)> {
        let dir = self.state_dir.join("containers");
        let mut removed = 0;
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A write that a crash interrupted; the previous record (if any) stands.
                let _ = fs::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(serde_json::from_slice::<ContainerInfo>(&bytes)?))
            {
                Ok(info) => records.push(info),
                Err(error) => {
                    log::warn!("ignoring unreadable record {}: {error:#}", path.display())
                }
            }
        }
        for info in records {
            match self.recover_one(&info) {
                Ok(()) => {}
                Err(error) => {
                    log::warn!(
                        "container {} cannot be recovered ({error:#}); removing what is left of it",
                        info.id
                    );
                    self.remove_leftovers(&info);
                    let _ = fs::remove_file(self.state_file(&info.id));
                    removed += 1;
                }
            }
        }
        removed += self.remove_orphans()?;
        let keep: Vec<u32> = self.containers.values().map(|m| m.network.slot).collect();
        self.datapath.forget_containers_except(&keep)?;
        Ok((self.containers.len(), removed))
    }

    fn recover_one(&mut self, info: &ContainerInfo) -> anyhow::Result<()> {
        let slot = info
            .slot()
            .with_context(|| format!("veth name {} has no slot", info.host_veth))?;
        if !info.netns.exists() {
            bail!("its namespace {} is gone", info.netns.display());
        }
        let network = container::recover(&self.host, &info.id, slot, &info.netns, &info.host_veth)
            .map(|mut network| {
                network.ephemeral_ports = info.ephemeral_ports;
                network.ports = info.ports.clone();
                network
            })?;
        if let Err(error) = self.ports.ephemeral.allocate_exact(info.ephemeral_ports) {
            log::warn!(
                "container {}: {error:#}; kept, outside the allocator",
                info.id
            );
        }
        self.datapath.add_container(&network)?;
        // This agent's flags may differ from the last one's (Mesos's Upgrade test):
        // egress follows them; ingress only where the container had a limit before or
        // existing containers are to be isolated.
        let mut info = info.clone();
        let egress = self.shaping.rates.egress.limit(info.cpus);
        let ingress = if info.ingress_limit.is_some()
            || self.shaping.rates.ingress_isolate_existing_containers
        {
            self.shaping.rates.ingress.limit(info.cpus)
        } else {
            None
        };
        self.shape(&network, egress.as_ref(), ingress.as_ref())?;
        let flow = self.recover_egress_flow(&info);
        let recorded = (egress, ingress, flow);
        let kept = self.set_egress_flow(network.slot, flow).and_then(|()| {
            if recorded != (info.egress_limit, info.ingress_limit, info.egress_flow) {
                (info.egress_limit, info.ingress_limit, info.egress_flow) = recorded;
                self.write_state(&info)?;
            }
            Ok(())
        });
        if let Err(error) = kept {
            self.give_back_egress_flow(flow);
            return Err(error);
        }
        self.containers
            .insert(info.id.clone(), Managed { info, network });
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

    /// A free flow for container `id`; with none left it shares flows by hash, as
    /// every container would without unique flows.
    fn take_egress_flow(&mut self, id: &str) -> Option<u32> {
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

    fn give_back_egress_flow(&mut self, flow: Option<u32>) {
        if let (Some(flows), Some(flow)) = (self.shaping.egress_flows.as_mut(), flow) {
            flows.give_back(flow);
        }
    }

    /// Tells the datapath which flow the container's packets leave in.
    fn set_egress_flow(&mut self, slot: u32, flow: Option<u32>) -> anyhow::Result<()> {
        let classid = match (&self.shaping.egress_flows, flow) {
            (Some(flows), Some(flow)) => flows.qdisc.classid(flow),
            _ => 0,
        };
        self.datapath.set_egress_flow(slot, classid)
    }

    /// Shapes the container's two directions (`None`: not limited).
    fn shape(
        &mut self,
        network: &ContainerNetwork,
        egress: Option<&HtbConfig>,
        ingress: Option<&HtbConfig>,
    ) -> anyhow::Result<()> {
        let fq_codel = self.shaping.fq_codel;
        let eth0 = network.container_eth0_index;
        crate::netns::run_in(&network.netns, || {
            let mut socket = NetlinkSocket::route()?;
            traffic_control::limit_gso(
                &mut socket,
                eth0,
                traffic_control::gso_max_segs(egress.map(|e| e.rate)),
            )?;
            traffic_control::apply(&mut socket, eth0, egress, fq_codel)
        })?
        .context("shaping the container's egress")?;
        let mut socket = NetlinkSocket::route()?;
        // Packets are sent through the qdiscs only once they exist, and no longer
        // before they go.
        if ingress.is_none() {
            self.datapath.set_ingress_shaped(network.slot, false)?;
        }
        traffic_control::apply(&mut socket, network.host_veth_index, ingress, fq_codel)
            .context("shaping the container's ingress")?;
        if ingress.is_some() {
            self.datapath.set_ingress_shaped(network.slot, true)?;
        }
        Ok(())
    }

    /// Removes the veth and namespace name of a container that cannot be recovered.
    fn remove_leftovers(&self, info: &ContainerInfo) {
        let _ = crate::netlink::with_handle(|handle| async move {
            if let Some(veth) = crate::netlink::link_by_name(&handle, &info.host_veth).await? {
                crate::netlink::delete_link(&handle, veth.index).await?;
            }
            Ok(())
        });
        let _ = container::destroy_namespace(&info.id);
    }

    /// Host-side veths `netiso<slot>` that belong to no recovered container, and the
    /// namespaces named `netiso-<id>` at their other end. (Only those: namespaces are
    /// matched through the veth's peer, so another agent's containers, such as in a
    /// neighbouring test lab, are never touched.)
    fn remove_orphans(&self) -> anyhow::Result<usize> {
        let known: BTreeSet<String> = self
            .containers
            .values()
            .map(|m| m.info.host_veth.clone())
            .collect();
        let candidates: Vec<(String, fs::File)> = fs::read_dir(crate::netns::NETNS_RUN_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let known_netns = self
                    .containers
                    .values()
                    .any(|m| m.info.netns == entry.path());
                (name.starts_with(container::NETNS_PREFIX) && !known_netns)
                    .then(|| fs::File::open(entry.path()).ok().map(|f| (name, f)))
                    .flatten()
            })
            .collect();
        let (veths, namespaces) = crate::netlink::with_handle(|handle| async move {
            let mut veths = Vec::new();
            let mut peer_ids = BTreeSet::new();
            for link in crate::netlink::links(&handle).await? {
                let is_ours = link
                    .name
                    .strip_prefix(container::HOST_VETH_PREFIX)
                    .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                if is_ours && !known.contains(&link.name) {
                    if let Some(id) = crate::netlink::peer_nsid(&handle, &link.name).await? {
                        peer_ids.insert(id);
                    }
                    veths.push(link);
                }
            }
            let mut namespaces = Vec::new();
            for (name, file) in &candidates {
                if let Some(id) = crate::netlink::nsid_of(&handle, file).await?
                    && peer_ids.contains(&id)
                {
                    namespaces.push(name.clone());
                }
            }
            for veth in &veths {
                crate::netlink::delete_link(&handle, veth.index).await?;
            }
            Ok((veths, namespaces))
        })?;
        for veth in &veths {
            log::info!("removed orphaned veth {}", veth.name);
        }
        for name in &namespaces {
            log::info!("removing orphaned namespace {name}");
            crate::netns::delete_named(name)?;
        }
        Ok(veths.len() + namespaces.len())
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        self.containers.values().map(|m| m.info.clone()).collect()
    }

    /// Creates a container; on any failure nothing of it is left behind.
    pub fn create(&mut self, request: CreateRequest) -> anyhow::Result<ContainerInfo> {
        container::check_id(&request.id)?;
        if self.containers.contains_key(&request.id) {
            bail!(
                "container {} already exists; destroy it first or choose another id",
                request.id
            );
        }
        let netns = match (&request.netns, request.pid) {
            (Some(_), Some(_)) => bail!("pass --netns or --pid, not both"),
            (Some(path), None) => Some(path.clone()),
            (None, Some(pid)) => Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            (None, None) => None,
        };
        self.check_ports(&request)?;
        let slot = (0..netiso_common::MAX_CONTAINERS)
            .find(|s| self.containers.values().all(|m| m.network.slot != *s))
            .context("too many containers: every datapath slot is in use")?;
        let ephemeral = self.ports.ephemeral.allocate()?;
        let spec = ContainerSpec {
            id: request.id.clone(),
            netns: netns.clone(),
            slot,
            ephemeral,
            ports: request.ports.clone(),
        };
        match self.build(&spec, request.labels, request.cpus, netns.is_some()) {
            Ok(info) => Ok(info),
            Err(error) => {
                self.ports.ephemeral.deallocate(ephemeral);
                Err(error)
            }
        }
    }

    fn build(
        &mut self,
        spec: &ContainerSpec,
        labels: BTreeMap<String, String>,
        cpus: Option<f64>,
        adopted: bool,
    ) -> anyhow::Result<ContainerInfo> {
        let network = container::create(&self.host, spec)?;
        let egress_flow = self.take_egress_flow(&spec.id);
        let info = ContainerInfo {
            id: spec.id.clone(),
            netns: network.netns.clone(),
            ephemeral_ports: spec.ephemeral,
            ports: spec.ports.clone(),
            host_veth: network.host_veth.clone(),
            adopted,
            labels,
            cpus,
            egress_limit: self.shaping.rates.egress.limit(cpus),
            ingress_limit: self.shaping.rates.ingress.limit(cpus),
            egress_flow,
        };
        let added = self
            .datapath
            .add_container(&network)
            .and_then(|()| self.set_egress_flow(network.slot, egress_flow))
            .and_then(|()| match (&info.egress_limit, &info.ingress_limit) {
                (None, None) => Ok(()),
                (egress, ingress) => self.shape(&network, egress.as_ref(), ingress.as_ref()),
            })
            .and_then(|()| self.write_state(&info));
        if let Err(error) = added {
            self.give_back_egress_flow(egress_flow);
            let _ = self.datapath.remove_container(&network);
            let _ = container::destroy(&network);
            let _ = fs::remove_file(self.state_file(&spec.id));
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
    /// not an error (it may be gone already).
    pub fn destroy(&mut self, id: &str) -> anyhow::Result<()> {
        let Some(managed) = self.containers.remove(id) else {
            return Ok(());
        };
        self.datapath.remove_container(&managed.network)?;
        container::destroy(&managed.network)?;
        self.ports
            .ephemeral
            .deallocate(managed.info.ephemeral_ports);
        self.give_back_egress_flow(managed.info.egress_flow);
        match fs::remove_file(self.state_file(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the state of {id}")),
        }
    }

    /// Gives a container a new set of non-ephemeral ports and/or a new number of CPUs
    /// (which rates per CPU follow), live. Connections on ports it keeps are not
    /// disturbed.
    pub fn update(
        &mut self,
        id: &str,
        ports: Option<Vec<PortRange>>,
        cpus: Option<f64>,
    ) -> anyhow::Result<ContainerInfo> {
        if !self.containers.contains_key(id) {
            bail!("no container {id}; see `netiso container list`");
        }
        if let Some(ports) = ports {
            let request = CreateRequest {
                id: id.to_owned(),
                ports: ports.clone(),
                ..Default::default()
            };
            self.check_ports(&request)?;
            let managed = self.containers.get_mut(id).expect("checked above");
            self.datapath.update_ports(&managed.network, &ports)?;
            managed.network.ports = ports.clone();
            managed.info.ports = ports;
        }
        if let Some(cpus) = cpus {
            if !(cpus.is_finite() && cpus >= 0.0) {
                bail!("--cpus must be a number of CPUs, 0 or more; got {cpus}");
            }
            let managed = &self.containers[id];
            let (network, old) = (managed.network.clone(), managed.info.clone());
            let egress = self.shaping.rates.egress.limit(Some(cpus));
            // Ingress limits reach a container created without one only if asked.
            let ingress = if old.ingress_limit.is_some()
                || self.shaping.rates.ingress_isolate_existing_containers
            {
                self.shaping.rates.ingress.limit(Some(cpus))
            } else {
                None
            };
            if (egress, ingress) != (old.egress_limit, old.ingress_limit) {
                self.shape(&network, egress.as_ref(), ingress.as_ref())?;
            }
            let info = &mut self.containers.get_mut(id).expect("checked above").info;
            (info.cpus, info.egress_limit, info.ingress_limit) = (Some(cpus), egress, ingress);
        }
        let info = self.containers[id].info.clone();
        self.write_state(&info)?;
        Ok(info)
    }

    /// Requested ports must be the agent's and nobody else's (the requesting
    /// container's own current ports excepted).
    fn check_ports(&self, request: &CreateRequest) -> anyhow::Result<()> {
        let managed = &self.ports.non_ephemeral;
        for range in &request.ports {
            if !managed
                .iter()
                .any(|m| m.begin <= range.begin && range.end <= m.end)
            {
                let list: Vec<String> = managed.iter().map(ToString::to_string).collect();
                bail!(
                    "Some non-ephemeral ports specified in [{range}] are not managed by the agent; it manages [{}]",
                    list.join(",")
                );
            }
            if let Some(other) = self
                .containers
                .values()
                .filter(|m| m.info.id != request.id)
                .find(|m| m.info.ports.iter().any(|p| p.overlaps(range)))
            {
                bail!(
                    "ports [{range}] overlap ports of container {}",
                    other.info.id
                );
            }
        }
        let mut seen = BTreeSet::new();
        for range in &request.ports {
            for port in range.ports() {
                if !seen.insert(port) {
                    bail!("port {port} is requested twice");
                }
            }
        }
        Ok(())
    }

    fn state_file(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(format!("{id}.json"))
    }

    /// Writes a container's record atomically: a crash leaves the old file or the new
    /// one, never a torn one.
    fn write_state(&self, info: &ContainerInfo) -> anyhow::Result<()> {
        let path = self.state_file(&info.id);
        let tmp = path.with_extension("json.tmp");
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(info)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
