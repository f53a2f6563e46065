//! Per-container statistics, in the shape of Mesos's `/monitor/statistics`: one entry
//! per container with its link counters (seen from inside the container), traffic
//! control statistics, ephemeral ports, the datapath's own counters and, behind
//! Mesos's flags, socket, SNMP and rate statistics.
//!
//! Link counters are those of the container's own eth0, read from the host through
//! the veth's peer (`IFLA_TARGET_NETNSID`): the host end of the veth does not see
//! packets the datapath hands to the container with `bpf_redirect_peer`, so Mesos's
//! way, reading the host end with rx and tx swapped, would miss all inbound traffic.
//!
//! A scrape runs on a thread of its own: one link dump and one qdisc dump in the
//! host's namespace, one link dump per container namespace (by its id, without
//! entering it), then, per container, `setns` into its namespace for what only exists
//! there (its eth0 qdiscs, sockets, SNMP) and back. Nothing is forked.
pub mod prometheus;
mod qdisc;
pub mod rates;
mod snmp;
mod socket;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use netiso_common::{CONTAINER_COUNTERS_MAP, ContainerCounters};
use netlink_packet_route::link::{LinkMessage, Stats64};
use nix::sched::{CloneFlags, setns};
use serde::Serialize;

use crate::{
    api::ManagerHandle,
    config::StatisticsFlags,
    manager::ContainerInfo,
    netlink_dump::{self, DumpSocket},
    ports::PortRange,
};

pub use qdisc::TrafficControlStatistics;
pub use rates::RateStatistics;
pub use snmp::SnmpStatistics;

/// One element of the `/monitor/statistics` array.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorEntry {
    pub executor_id: String,
    pub executor_name: String,
    pub framework_id: String,
    pub source: String,
    pub statistics: ResourceStatistics,
    /// Not part of Mesos's answer; [`prometheus`] labels samples with it.
    #[serde(skip)]
    pub container_id: String,
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

/// The network part of Mesos's `ResourceStatistics`, plus netiso's datapath counters.
/// Optional parts are left out of the JSON when absent, as Mesos leaves them out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResourceStatistics {
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    pub net_rx_packets: u64,
    pub net_rx_bytes: u64,
    pub net_rx_errors: u64,
    pub net_rx_dropped: u64,
    pub net_tx_packets: u64,
    pub net_tx_bytes: u64,
    pub net_tx_errors: u64,
    pub net_tx_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tx_rate_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tx_burst_rate_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tx_burst_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_rx_rate_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_rx_burst_rate_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_rx_burst_size: Option<u64>,
    /// One entry per qdisc netiso knows by name that exists; left out when none does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub net_traffic_control_statistics: Vec<TrafficControlStatistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_ephemeral_ports: Option<PortRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_active_connections: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_time_wait_connections: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_rtt_microsecs_p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_rtt_microsecs_p90: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_rtt_microsecs_p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_tcp_rtt_microsecs_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_snmp_statistics: Option<SnmpStatistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_rate_statistics: Option<RateStatistics>,
    /// netiso's own per-container counters (not in Mesos).
    pub netiso_datapath_statistics: DatapathStatistics,
}

/// What the eBPF datapath counted for a container, summed over CPUs. Unlike the link
/// counters, it says why packets were dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DatapathStatistics {
    /// Packets (and their bytes) steered to the container by port.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets (and bytes) the container sent that the datapath let through.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Sent from a TCP or UDP port the container does not own.
    pub tx_dropped_port_not_owned: u64,
    /// Sent with headers too short or malformed to read.
    pub tx_dropped_malformed: u64,
    /// Sent as something a container may not send (ARP, IPv6 neighbour discovery and
    /// multicast listener reports, fragments, other protocols).
    pub tx_dropped_other: u64,
}

impl From<ContainerCounters> for DatapathStatistics {
    fn from(c: ContainerCounters) -> Self {
        Self {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            tx_dropped_port_not_owned: c.tx_dropped_port_not_owned,
            tx_dropped_malformed: c.tx_dropped_malformed,
            tx_dropped_other: c.tx_dropped_other,
        }
    }
}

/// Gathers statistics; shared by the HTTP server and the control API.
pub struct Collector {
    flags: StatisticsFlags,
    counters: PerCpuArray<MapData, ContainerCounters>,
    rates: Option<Arc<rates::RatesCollector>>,
}

impl Collector {
    /// Opens the pinned counters map under `pin_root` and, if rate statistics are on,
    /// starts sampling.
    pub fn new(flags: StatisticsFlags, pin_root: &Path) -> anyhow::Result<Self> {
        let pin = pin_root.join(CONTAINER_COUNTERS_MAP);
        let map = MapData::from_pin(&pin)
            .with_context(|| format!("opening pinned map {}", pin.display()))?;
        let counters = PerCpuArray::try_from(Map::from_map_data(map)?)?;
        let rates = match (flags.rates, flags.rate_window, flags.rate_interval) {
            (true, Some(window), Some(interval)) => {
                Some(rates::RatesCollector::start(window.0, interval.0)?)
            }
            _ => None,
        };
        Ok(Self {
            flags,
            counters,
            rates,
        })
    }

    /// The statistics of `containers`, gathered on a new thread (it enters their
    /// namespaces, so no shared thread does). A container that vanished meanwhile is
    /// left out.
    pub async fn collect(
        self: &Arc<Self>,
        containers: Vec<ContainerInfo>,
    ) -> anyhow::Result<Vec<MonitorEntry>> {
        let collector = Arc::clone(self);
        let (reply, answer) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netiso-stats".into())
            .spawn(move || {
                let _ = reply.send(collector.collect_here(&containers));
            })
            .context("starting a statistics thread")?;
        answer
            .await
            .context("the statistics thread ended without an answer")?
    }

    /// Runs on a thread that may `setns`; it always returns to where it started.
    fn collect_here(&self, containers: &[ContainerInfo]) -> anyhow::Result<Vec<MonitorEntry>> {
        let home = File::open("/proc/thread-self/ns/net")
            .context("opening the agent's network namespace")?;
        let mut host = DumpSocket::route().context("opening a netlink socket")?;
        let veths: HashMap<String, LinkMessage> = host
            .links()?
            .into_iter()
            .filter_map(|link| Some((netlink_dump::link_name(&link)?.to_owned(), link)))
            .collect();
        let host_qdiscs = host.qdiscs()?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let mut entries = Vec::with_capacity(containers.len());
        for info in containers {
            let Some(veth) = veths.get(&info.host_veth) else {
                log::debug!(
                    "container {}: no veth {}, left out",
                    info.id,
                    info.host_veth
                );
                continue;
            };
            let (eth0_index, eth0) = match container_eth0(&mut host, veth) {
                Ok(Some(eth0)) => eth0,
                Ok(None) => {
                    log::debug!("container {}: its veth has no peer, left out", info.id);
                    continue;
                }
                Err(error) => {
                    log::debug!("container {}: {error:#}; left out", info.id);
                    continue;
                }
            };
            let mut statistics = ResourceStatistics {
                timestamp,
                net_rx_packets: eth0.rx_packets,
                net_rx_bytes: eth0.rx_bytes,
                net_rx_errors: eth0.rx_errors,
                net_rx_dropped: eth0.rx_dropped,
                net_tx_packets: eth0.tx_packets,
                net_tx_bytes: eth0.tx_bytes,
                net_tx_errors: eth0.tx_errors,
                net_tx_dropped: eth0.tx_dropped,
                net_ephemeral_ports: Some(info.ephemeral_ports),
                ..Default::default()
            };
            let veth_index = veth.header.index;
            let inside = match self.collect_inside(&info.netns, &home, eth0_index) {
                Ok(inside) => inside,
                Err(error) => {
                    log::debug!("container {}: {error:#}; left out", info.id);
                    continue;
                }
            };
            statistics.net_traffic_control_statistics = inside.qdiscs;
            statistics
                .net_traffic_control_statistics
                .extend(qdisc::ingress_statistics(&host_qdiscs, veth_index));
            if let Some(sockets) = inside.sockets {
                statistics.net_tcp_active_connections = Some(sockets.active as f64);
                statistics.net_tcp_time_wait_connections = Some(sockets.time_wait as f64);
            }
            if let Some(rtt) = inside.rtt {
                statistics.net_tcp_rtt_microsecs_p50 = Some(rtt.p50);
                statistics.net_tcp_rtt_microsecs_p90 = Some(rtt.p90);
                statistics.net_tcp_rtt_microsecs_p95 = Some(rtt.p95);
                statistics.net_tcp_rtt_microsecs_p99 = Some(rtt.p99);
            }
            statistics.net_snmp_statistics = inside.snmp;
            statistics.net_rate_statistics = self
                .rates
                .as_ref()
                .and_then(|rates| rates.statistics(&info.host_veth));
            if let Some(slot) = info.slot() {
                match crate::datapath::read_container_counters(&self.counters, slot) {
                    Ok(counters) => statistics.netiso_datapath_statistics = counters.into(),
                    Err(error) => log::warn!("container {}: datapath counters: {error:#}", info.id),
                }
            }
            entries.push(entry(info, statistics));
        }
        Ok(entries)
    }

    /// What is read from inside the container's namespace. Enters it and comes back,
    /// whatever happens in between.
    fn collect_inside(&self, netns: &Path, home: &File, eth0: u32) -> anyhow::Result<Inside> {
        let target = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        setns(&target, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", netns.display()))?;
        let inside = self.read_inside(eth0);
        // A thread that cannot return must not go on: everything after would read the
        // wrong namespace.
        if let Err(error) = setns(home, CloneFlags::CLONE_NEWNET) {
            panic!("cannot return to the agent's network namespace: {error}");
        }
        inside
    }

    /// `eth0`: the ifindex of the container's eth0 in its namespace.
    fn read_inside(&self, eth0: u32) -> anyhow::Result<Inside> {
        let qdiscs = qdisc::egress_statistics(&DumpSocket::route()?.qdiscs()?, eth0);
        let sockets = self
            .flags
            .socket_summary
            .then(socket::tcp_connection_counts)
            .transpose()?;
        let rtt = if self.flags.socket_details {
            socket::tcp_rtt_percentiles()?
        } else {
            None
        };
        let snmp = self.flags.snmp.then(snmp::read).transpose()?;
        Ok(Inside {
            qdiscs,
            sockets,
            rtt,
            snmp,
        })
    }
}

struct Inside {
    qdiscs: Vec<TrafficControlStatistics>,
    sockets: Option<socket::ConnectionCounts>,
    rtt: Option<socket::RttPercentiles>,
    snmp: Option<SnmpStatistics>,
}

/// The ifindex (in its namespace) and counters of a container's eth0, found from the
/// host end of its veth; `None` if the veth has no peer in another namespace.
pub(crate) fn container_eth0(
    host: &mut DumpSocket,
    veth: &LinkMessage,
) -> anyhow::Result<Option<(u32, Stats64)>> {
    let Some((nsid, peer)) = netlink_dump::veth_peer(veth) else {
        return Ok(None);
    };
    Ok(host
        .links_in(nsid)?
        .iter()
        .find(|link| link.header.index == peer)
        .and_then(netlink_dump::link_stats64)
        .map(|stats| (peer, *stats)))
}

/// Where the servers get statistics: the manager for the containers, the collector for
/// their numbers.
#[derive(Clone)]
pub struct StatisticsSource {
    pub manager: ManagerHandle,
    pub collector: Arc<Collector>,
}

impl StatisticsSource {
    /// Every container's statistics, or only `id`'s (`None` if there is no such
    /// container).
    pub async fn entries(&self, id: Option<&str>) -> anyhow::Result<Option<Vec<MonitorEntry>>> {
        let mut containers = self.manager.list().await?;
        if let Some(id) = id {
            containers.retain(|c| c.id == id);
            if containers.is_empty() {
                return Ok(None);
            }
        }
        self.collector.collect(containers).await.map(Some)
    }
}

/// Mesos's executor fields come from the container's labels of the same names when
/// it has them, and otherwise from its id (the framework id is then empty).
fn entry(info: &ContainerInfo, statistics: ResourceStatistics) -> MonitorEntry {
    let label = |name: &str, default: &str| {
        info.labels
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    MonitorEntry {
        executor_id: label("executor_id", &info.id),
        executor_name: label("executor_name", &info.id),
        framework_id: label("framework_id", ""),
        source: label("source", &info.id),
        statistics,
        container_id: info.id.clone(),
        labels: info.labels.clone(),
    }
}
