//! `/metrics`: the same statistics in the OpenMetrics text format that Prometheus
//! scrapes. Names follow Prometheus's conventions: the `netiso_` prefix, cAdvisor's
//! `container_network_*` suffixes (so dashboards port easily, without double counting
//! next to cAdvisor), base units, counters ending in `_total`. Every sample carries
//! `container_id` and the container's labels as `label_<name>`.
use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::MonitorEntry;

/// The two exposition formats Prometheus reads. OpenMetrics is what Prometheus asks for
/// first; the classic text format (0.0.4) is what older scrapers and `promtool check
/// metrics` read, and what a client that names neither gets, as with Prometheus's own
/// client libraries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

type Labels = Vec<(String, String)>;

/// A sample's value: counters stay integers (exact past 2^53), gauges are floats.
#[derive(Clone, Copy, Debug)]
enum Value {
    Count(u64),
    Level(f64),
}

use Value::{Count, Level};

/// One metric family and its samples.
#[derive(Debug)]
struct Family {
    /// Without the prefix and, for counters, without `_total`.
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.iter().filter(|f| !f.samples.is_empty()) {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match *value {
                    Count(count) => ConstCounter::new(count).encode(sample)?,
                    Level(level) => ConstGauge::new(level).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// Renders `entries`, and the containers left out because they could not be probed
/// (`probe_failures`: id → how many scrapes), in `format`.
pub fn render(
    entries: &[MonitorEntry],
    probe_failures: &BTreeMap<String, u64>,
    format: Format,
) -> String {
    let mut registry = Registry::with_prefix("netiso");
    let mut all = families(entries);
    all.push(Family {
        name: "container_statistics_probe_failures",
        help: "Scrapes that left the container out because it could not be probed (such as too many open files).",
        kind: MetricType::Counter,
        samples: probe_failures
            .iter()
            .map(|(id, count)| (vec![("container_id".to_owned(), id.clone())], Count(*count)))
            .collect(),
    });
    registry.register_collector(Box::new(Families(all)));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    match format {
        Format::OpenMetrics => text,
        Format::Text => openmetrics_to_text(&text),
    }
}

/// The classic text format of an OpenMetrics exposition without `_created` samples or
/// exemplars (ours has neither): a counter family's HELP and TYPE name its samples'
/// `_total` name, and there are no UNIT lines and no `# EOF`.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 8 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                for part in [prefix, name, suffix, " ", tail] {
                    text.push_str(part);
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn families(entries: &[MonitorEntry]) -> Vec<Family> {
    use MetricType::{Counter, Gauge};
    let mut families = Vec::new();
    let mut family = |name, help, kind, samples: Vec<(Labels, Value)>| {
        families.push(Family {
            name,
            help,
            kind,
            samples,
        });
    };
    // One sample per container of `value(entry)`, where it has one.
    let each = |value: &dyn Fn(&MonitorEntry) -> Option<Value>| -> Vec<(Labels, Value)> {
        entries
            .iter()
            .filter_map(|e| Some((labels(e, &[]), value(e)?)))
            .collect()
    };
    // Several samples per container, told apart by an extra label.
    let split = |extra: &'static str,
                 values: &dyn Fn(&MonitorEntry) -> Vec<(String, Value)>|
     -> Vec<(Labels, Value)> {
        entries
            .iter()
            .flat_map(|e| {
                values(e)
                    .into_iter()
                    .map(move |(value_of_extra, v)| (labels(e, &[(extra, value_of_extra)]), v))
            })
            .collect()
    };
    let link = |f: fn(&super::ResourceStatistics) -> u64| {
        move |e: &MonitorEntry| Some(Count(f(&e.statistics)))
    };
    family(
        "container_network_receive_bytes",
        "Bytes received by the container (its eth0's counters).",
        Counter,
        each(&link(|s| s.net_rx_bytes)),
    );
    family(
        "container_network_receive_packets",
        "Packets received by the container.",
        Counter,
        each(&link(|s| s.net_rx_packets)),
    );
    family(
        "container_network_receive_errors",
        "Receive errors of the container's link.",
        Counter,
        each(&link(|s| s.net_rx_errors)),
    );
    family(
        "container_network_receive_packets_dropped",
        "Packets dropped on the way into the container.",
        Counter,
        each(&link(|s| s.net_rx_dropped)),
    );
    family(
        "container_network_transmit_bytes",
        "Bytes sent by the container.",
        Counter,
        each(&link(|s| s.net_tx_bytes)),
    );
    family(
        "container_network_transmit_packets",
        "Packets sent by the container.",
        Counter,
        each(&link(|s| s.net_tx_packets)),
    );
    family(
        "container_network_transmit_errors",
        "Transmit errors of the container's link.",
        Counter,
        each(&link(|s| s.net_tx_errors)),
    );
    family(
        "container_network_transmit_packets_dropped",
        "Packets the container's link dropped on send.",
        Counter,
        each(&link(|s| s.net_tx_dropped)),
    );
    let datapath = |f: fn(&netiso_common::ContainerCounters) -> u64| {
        move |e: &MonitorEntry| Some(Count(f(&e.statistics.netiso_datapath_statistics)))
    };
    family(
        "container_datapath_receive_bytes",
        "Bytes the eBPF datapath steered to the container by port.",
        Counter,
        each(&datapath(|d| d.rx_bytes)),
    );
    family(
        "container_datapath_receive_packets",
        "Packets the eBPF datapath steered to the container by port.",
        Counter,
        each(&datapath(|d| d.rx_packets)),
    );
    family(
        "container_datapath_transmit_bytes",
        "Bytes the container sent that the eBPF datapath let through.",
        Counter,
        each(&datapath(|d| d.tx_bytes)),
    );
    family(
        "container_datapath_transmit_packets",
        "Packets the container sent that the eBPF datapath let through.",
        Counter,
        each(&datapath(|d| d.tx_packets)),
    );
    family(
        "container_datapath_transmit_dropped_packets",
        "Packets the container sent that the eBPF datapath dropped, by reason.",
        Counter,
        split("reason", &|e| {
            let d = e.statistics.netiso_datapath_statistics;
            vec![
                ("port_not_owned".into(), Count(d.tx_dropped_port_not_owned)),
                ("malformed".into(), Count(d.tx_dropped_malformed)),
                ("other".into(), Count(d.tx_dropped_other)),
                ("spoofed".into(), Count(d.tx_dropped_spoofed)),
                ("fragment".into(), Count(d.tx_dropped_fragment)),
                ("icmp".into(), Count(d.tx_dropped_icmp)),
                ("multicast".into(), Count(d.tx_dropped_multicast)),
                ("host_port".into(), Count(d.tx_dropped_host_port)),
                ("rate_limit".into(), Count(d.tx_dropped_rate_limit)),
            ]
        }),
    );
    family(
        "container_datapath_receive_dropped_packets",
        "Packets from the network for the container that the eBPF datapath dropped, by reason.",
        Counter,
        split("reason", &|e| {
            let d = e.statistics.netiso_datapath_statistics;
            vec![("spoofed_source".into(), Count(d.rx_dropped_spoofed_source))]
        }),
    );
    let qdisc = |f: fn(&super::TrafficControlStatistics) -> u64| {
        move |e: &MonitorEntry| -> Vec<(String, u64)> {
            e.statistics
                .net_traffic_control_statistics
                .iter()
                .map(|q| (q.id.clone(), f(q)))
                .collect()
        }
    };
    for (name, help, kind, value) in [
        (
            "container_qdisc_bytes",
            "Bytes sent through the container's qdisc.",
            Counter,
            qdisc(|q| q.bytes),
        ),
        (
            "container_qdisc_packets",
            "Packets sent through the container's qdisc.",
            Counter,
            qdisc(|q| q.packets),
        ),
        (
            "container_qdisc_dropped_packets",
            "Packets the container's qdisc dropped.",
            Counter,
            qdisc(|q| q.drops),
        ),
        (
            "container_qdisc_overlimits",
            "Times the container's qdisc was over its limit.",
            Counter,
            qdisc(|q| q.overlimits),
        ),
        (
            "container_qdisc_requeues",
            "Packets the container's qdisc requeued.",
            Counter,
            qdisc(|q| q.requeues),
        ),
        (
            "container_qdisc_backlog_bytes",
            "Bytes queued in the container's qdisc.",
            Gauge,
            qdisc(|q| q.backlog),
        ),
        (
            "container_qdisc_queue_length",
            "Packets queued in the container's qdisc.",
            Gauge,
            qdisc(|q| q.qlen),
        ),
    ] {
        let typed = |e: &MonitorEntry| -> Vec<(String, Value)> {
            let wrap = |v| {
                if kind == Counter {
                    Count(v)
                } else {
                    Level(v as f64)
                }
            };
            value(e).into_iter().map(|(id, v)| (id, wrap(v))).collect()
        };
        family(name, help, kind, split("qdisc", &typed));
    }
    let limit = |f: fn(&super::ResourceStatistics) -> Option<u64>| {
        move |e: &MonitorEntry| f(&e.statistics).map(|v| Level(v as f64))
    };
    for (name, help, value) in [
        (
            "container_network_transmit_rate_limit_bytes_per_second",
            "The container's egress rate limit.",
            limit(|s| s.net_tx_rate_limit),
        ),
        (
            "container_network_transmit_burst_rate_limit_bytes_per_second",
            "The container's egress ceil rate.",
            limit(|s| s.net_tx_burst_rate_limit),
        ),
        (
            "container_network_transmit_burst_bytes",
            "The container's egress burst size.",
            limit(|s| s.net_tx_burst_size),
        ),
        (
            "container_network_receive_rate_limit_bytes_per_second",
            "The container's ingress rate limit.",
            limit(|s| s.net_rx_rate_limit),
        ),
        (
            "container_network_receive_burst_rate_limit_bytes_per_second",
            "The container's ingress ceil rate.",
            limit(|s| s.net_rx_burst_rate_limit),
        ),
        (
            "container_network_receive_burst_bytes",
            "The container's ingress burst size.",
            limit(|s| s.net_rx_burst_size),
        ),
    ] {
        family(name, help, Gauge, each(&value));
    }
    family(
        "container_ephemeral_port_range_start",
        "First port of the container's ephemeral range.",
        Gauge,
        each(&|e| Some(Level(f64::from(e.statistics.net_ephemeral_ports?.begin)))),
    );
    family(
        "container_ephemeral_port_range_end",
        "Last port of the container's ephemeral range (inclusive).",
        Gauge,
        each(&|e| Some(Level(f64::from(e.statistics.net_ephemeral_ports?.end)))),
    );
    family(
        "container_tcp_connections",
        "TCP sockets of the container in use (listening ones too) and in TIME_WAIT.",
        Gauge,
        split("state", &|e| {
            let s = &e.statistics;
            [
                ("active", s.net_tcp_active_connections),
                ("time_wait", s.net_tcp_time_wait_connections),
            ]
            .into_iter()
            .filter_map(|(state, v)| Some((state.to_owned(), Level(v?))))
            .collect()
        }),
    );
    family(
        "container_tcp_rtt_seconds",
        "Percentiles of the smoothed RTT of the container's TCP sockets.",
        Gauge,
        split("percentile", &|e| {
            let s = &e.statistics;
            [
                ("50", s.net_tcp_rtt_microsecs_p50),
                ("90", s.net_tcp_rtt_microsecs_p90),
                ("95", s.net_tcp_rtt_microsecs_p95),
                ("99", s.net_tcp_rtt_microsecs_p99),
            ]
            .into_iter()
            .filter_map(|(p, v)| Some((p.to_owned(), Level(v? / 1e6))))
            .collect()
        }),
    );
    family(
        "container_snmp",
        "The container's /proc/net/snmp values (section:field).",
        Gauge,
        split("field", &|e| {
            let Some(snmp) = &e.statistics.net_snmp_statistics else {
                return Vec::new();
            };
            [
                ("Ip", &snmp.ip_stats),
                ("Icmp", &snmp.icmp_stats),
                ("Tcp", &snmp.tcp_stats),
                ("Udp", &snmp.udp_stats),
            ]
            .into_iter()
            .flat_map(|(section, fields)| {
                fields
                    .iter()
                    .map(move |(field, v)| (format!("{section}:{field}"), Level(*v as f64)))
            })
            .collect()
        }),
    );
    family(
        "containers",
        "Containers the agent manages.",
        Gauge,
        vec![(Vec::new(), Level(entries.len() as f64))],
    );
    families
}

/// `container_id`, the container's labels as `label_<name>` (names made valid for
/// Prometheus), then `extra`.
fn labels(entry: &MonitorEntry, extra: &[(&str, String)]) -> Labels {
    let mut labels = vec![("container_id".to_owned(), entry.container_id.clone())];
    let mut seen = BTreeSet::new();
    for (name, value) in &entry.labels {
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if seen.insert(name.clone()) {
            labels.push((format!("label_{name}"), value.clone()));
        }
    }
    labels.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_has_no_openmetrics_lines() {
        let openmetrics = "# HELP netiso_a_bytes Bytes.\n# TYPE netiso_a_bytes counter\n\
            # UNIT netiso_a_bytes bytes\nnetiso_a_bytes_total{container_id=\"x\"} 5\n\
            # HELP netiso_containers Containers.\n# TYPE netiso_containers gauge\n\
            netiso_containers 1.0\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP netiso_a_bytes_total Bytes.\n# TYPE netiso_a_bytes_total counter\n\
            netiso_a_bytes_total{container_id=\"x\"} 5\n\
            # HELP netiso_containers Containers.\n# TYPE netiso_containers gauge\n\
            netiso_containers 1.0\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
