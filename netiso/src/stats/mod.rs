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
//! A scrape runs on threads of its own and forks nothing: one link dump and one qdisc
//! dump in the host's namespace, then per container one link dump of its namespace
//! (by its id, without entering it) and what only exists inside it (its eth0 qdiscs,
//! sockets, SNMP), read through sockets and files opened there once and kept (see
//! [`container_probe`]): a container's namespace is entered, with `setns` and back, only the
//! first time it is scraped.
mod container_probe;
pub mod prometheus;
mod qdisc;
pub mod rates;
mod snmp;
mod socket;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use netiso_common::ContainerCounters;
use serde::Serialize;

use crate::{
    config::StatisticsFlags,
    control::ContainerInfo,
    datapath,
    net::{Link, NetlinkSocket},
    ports::PortRange,
};

use container_probe::{Inside, Probe};
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
    /// What the eBPF datapath counted for the container, summed over CPUs (not in
    /// Mesos): unlike the link counters, it says why packets were dropped.
    pub netiso_datapath_statistics: ContainerCounters,
}

/// Gathers statistics; shared by the HTTP server and the control API.
pub struct Collector {
    flags: StatisticsFlags,
    counters: PerCpuArray<MapData, ContainerCounters>,
    rates: Option<Arc<rates::RatesCollector>>,
    /// Each container's sockets and files, kept between scrapes.
    probes: Mutex<HashMap<String, Probe>>,
    /// Containers whose probe failed (they were left out of scrapes), and how often.
    probe_failures: Mutex<BTreeMap<String, u64>>,
    /// One scrape at a time: a scrape's threads are bounded, and two scrapes never
    /// race on the same probe.
    scrape: tokio::sync::Mutex<()>,
}

impl Collector {
    /// Opens the pinned counters map under `pin_root` and, if rate statistics are on,
    /// starts sampling.
    pub fn new(flags: StatisticsFlags, pin_root: &Path) -> anyhow::Result<Self> {
        let counters = datapath::open_container_counters(pin_root)?;
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
            probes: Mutex::new(HashMap::new()),
            probe_failures: Mutex::new(BTreeMap::new()),
            scrape: tokio::sync::Mutex::new(()),
        })
    }

    /// The statistics of `containers`, gathered on a new thread (it enters their
    /// namespaces, so no shared thread does). A container that vanished meanwhile is
    /// left out.
    pub async fn collect(
        self: &Arc<Self>,
        containers: Vec<ContainerInfo>,
        all: bool,
    ) -> anyhow::Result<Vec<MonitorEntry>> {
        let one_at_a_time = self.scrape.lock().await;
        if all {
            // Containers gone since the last scrape: close what was open in them.
            let live = |id: &String| containers.iter().any(|c| &c.id == id);
            self.probes().retain(|id, _| live(id));
            lock(&self.probe_failures).retain(|id, _| live(id));
        }
        let collector = Arc::clone(self);
        let (reply, answer) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netiso-stats".into())
            .spawn(move || {
                let _ = reply.send(collector.collect_here(&containers));
            })
            .context("starting a statistics thread")?;
        let entries = answer
            .await
            .context("the statistics thread ended without an answer")?;
        drop(one_at_a_time);
        entries
    }

    /// Closes what was open in container `id` (it is destroyed), so that its
    /// namespace does not outlive it.
    pub fn forget(&self, id: &str) {
        self.probes().remove(id);
        lock(&self.probe_failures).remove(id);
    }

    /// Containers that could not be probed, and how many scrapes left each out.
    pub fn probe_failures(&self) -> BTreeMap<String, u64> {
        lock(&self.probe_failures).clone()
    }

    /// Reads what the host's namespace knows of every container at once, then goes
    /// through the containers on a few threads (the work per container is mostly
    /// waiting for the kernel).
    fn collect_here(&self, containers: &[ContainerInfo]) -> anyhow::Result<Vec<MonitorEntry>> {
        let mut host = NetlinkSocket::route().context("opening a netlink socket")?;
        // The host's links only matter to containers scraped for the first time.
        let unprobed = {
            let probes = self.probes();
            containers.iter().any(|c| !probes.contains_key(&c.id))
        };
        let host_view = HostView {
            veths: if unprobed {
                host.links()?
                    .into_iter()
                    .map(|link| (link.name.clone(), link))
                    .collect()
            } else {
                HashMap::new()
            },
            qdiscs: host.qdiscs()?,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_SCRAPE_THREADS);
        let chunk = containers
            .len()
            .div_ceil(threads)
            .max(MIN_CONTAINERS_PER_THREAD);
        std::thread::scope(|scope| {
            let workers: Vec<_> = containers
                .chunks(chunk)
                .map(|part| scope.spawn(|| self.collect_part(part, &host_view)))
                .collect();
            let mut entries = Vec::with_capacity(containers.len());
            for worker in workers {
                entries.extend(
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                );
            }
            Ok(entries)
        })
    }

    /// Reads inside the container through its probe, opening one (which enters its
    /// namespace once) if it has none yet or its namespace changed. Returns what it
    /// read and the ifindex of the host end of its veth.
    fn read_inside(
        &self,
        info: &ContainerInfo,
        home: &File,
        host_view: &HostView,
    ) -> anyhow::Result<(Inside, u32)> {
        let inode = container_probe::netns_inode(&info.netns)
            .with_context(|| format!("its namespace {}", info.netns.display()))?;
        let kept = self
            .probes()
            .remove(&info.id)
            .filter(|p| p.netns_inode == inode);
        let mut probe = match kept {
            Some(probe) => probe,
            None => {
                let veth = host_view
                    .veths
                    .get(&info.host_veth)
                    .with_context(|| format!("no veth {}", info.host_veth))?;
                let (_, eth0) = veth.peer.context("its veth has no peer")?;
                Probe::open(&info.netns, home, &self.flags, (veth.index, eth0))?
            }
        };
        let inside = probe.read()?;
        let veth_index = probe.veth_index;
        self.probes().insert(info.id.clone(), probe);
        Ok((inside, veth_index))
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Probe>> {
        lock(&self.probes)
    }

    /// Counts a failed probe of container `id`; the first in a row is a warning.
    fn probe_failed(&self, id: &str, error: &anyhow::Error) {
        let mut failures = lock(&self.probe_failures);
        let count = failures.entry(id.to_owned()).or_insert(0);
        *count += 1;
        if *count == 1 {
            log::warn!(
                "container {id} cannot be probed for statistics ({error:#}); it is left out of scrapes (netiso_container_statistics_probe_failures_total)"
            );
        } else {
            log::debug!("container {id}: {error:#}; left out");
        }
    }

    /// Runs on a thread that may `setns` (to open a new container's probe); it always
    /// returns to where it started.
    fn collect_part(
        &self,
        containers: &[ContainerInfo],
        host_view: &HostView,
    ) -> anyhow::Result<Vec<MonitorEntry>> {
        let home = File::open("/proc/thread-self/ns/net")
            .context("opening the agent's network namespace")?;
        let mut entries = Vec::with_capacity(containers.len());
        for info in containers {
            let (inside, veth_index) = match self.read_inside(info, &home, host_view) {
                Ok(read) => read,
                Err(error) => {
                    // A container destroyed during the scrape is not a failure.
                    if info.netns.exists() {
                        self.probe_failed(&info.id, &error);
                    }
                    continue;
                }
            };
            let eth0 = inside.eth0;
            let mut statistics = ResourceStatistics {
                timestamp: host_view.timestamp,
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
            if let Some(limit) = info.egress_limit {
                statistics.net_tx_rate_limit = Some(limit.rate);
                statistics.net_tx_burst_rate_limit = limit.ceil;
                statistics.net_tx_burst_size = limit.burst;
            }
            if let Some(limit) = info.ingress_limit {
                statistics.net_rx_rate_limit = Some(limit.rate);
                statistics.net_rx_burst_rate_limit = limit.ceil;
                statistics.net_rx_burst_size = limit.burst;
            }
            statistics.net_traffic_control_statistics = inside.qdiscs;
            statistics
                .net_traffic_control_statistics
                .extend(qdisc::ingress_statistics(&host_view.qdiscs, veth_index));
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
                match datapath::read_container_counters(&self.counters, slot) {
                    Ok(counters) => statistics.netiso_datapath_statistics = counters,
                    Err(error) => log::warn!("container {}: datapath counters: {error:#}", info.id),
                }
            }
            entries.push(entry(info, statistics));
        }
        Ok(entries)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Most threads a scrape uses, and fewest containers worth a thread of their own.
const MAX_SCRAPE_THREADS: usize = 4;
const MIN_CONTAINERS_PER_THREAD: usize = 32;

/// What a scrape reads once in the host's namespace.
struct HostView {
    veths: HashMap<String, Link>,
    qdiscs: Vec<netlink_packet_route::tc::TcMessage>,
    timestamp: f64,
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
