//! Rate statistics (`--network_enable_rate_statistics`): a background thread samples
//! the counters of every container's eth0 each interval (one link dump in the host's
//! namespace to find the veths, then one per container namespace, by its id), keeps
//! the per-second rates of the last window, and scrapes report their percentiles.
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use netlink_packet_route::link::Stats64;
use serde::Serialize;

use crate::net::{Link, NetlinkSocket, container_network::HOST_VETH_PREFIX};

/// Percentiles of one rate over the window (libprocess's `Statistics`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RatePercentiles {
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub samples: u64,
}

/// Mesos's `net_rate_statistics`. A rate is absent until it has two samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateStatistics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_packet_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_drop_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_error_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_packet_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_drop_rate: Option<RatePercentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_error_rate: Option<RatePercentiles>,
    pub sampling_window_secs: f64,
    pub sampling_interval_secs: f64,
}

/// The eight counters in [`RateStatistics`] order.
type Counters = [u64; 8];

fn counters(eth0: &Stats64) -> Counters {
    [
        eth0.rx_bytes,
        eth0.rx_packets,
        eth0.rx_dropped,
        eth0.rx_errors,
        eth0.tx_bytes,
        eth0.tx_packets,
        eth0.tx_dropped,
        eth0.tx_errors,
    ]
}

struct LinkHistory {
    ifindex: u32,
    last: (Instant, Counters),
    /// Per-second rates, oldest first, at most `capacity` of them.
    rates: VecDeque<[f64; 8]>,
}

pub struct RatesCollector {
    window: Duration,
    interval: Duration,
    capacity: usize,
    links: Mutex<HashMap<String, LinkHistory>>,
}

impl RatesCollector {
    /// Starts sampling every `interval`, keeping `window` worth of samples. The
    /// sampling thread ends when the collector is dropped.
    pub fn start(window: Duration, interval: Duration) -> anyhow::Result<Arc<Self>> {
        let capacity = (window.as_secs_f64() / interval.as_secs_f64())
            .ceil()
            .max(1.0) as usize;
        let collector = Arc::new(Self {
            window,
            interval,
            capacity,
            links: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&collector);
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        thread::Builder::new()
            .name("netiso-rates".into())
            .spawn(move || sample_until_dropped(&weak, &mut socket, interval))
            .context("starting the rate statistics thread")?;
        Ok(collector)
    }

    /// The rate percentiles of the container whose host veth is `veth`.
    pub fn statistics(&self, veth: &str) -> Option<RateStatistics> {
        let links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let history = links.get(veth)?;
        let column = |i: usize| {
            let values: Vec<f64> = history.rates.iter().map(|r| r[i]).collect();
            percentiles(values)
        };
        Some(RateStatistics {
            rx_rate: column(0),
            rx_packet_rate: column(1),
            rx_drop_rate: column(2),
            rx_error_rate: column(3),
            tx_rate: column(4),
            tx_packet_rate: column(5),
            tx_drop_rate: column(6),
            tx_error_rate: column(7),
            sampling_window_secs: self.window.as_secs_f64(),
            sampling_interval_secs: self.interval.as_secs_f64(),
        })
    }

    fn record(&self, now: Instant, sample: Vec<(String, u32, Counters)>) {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links.retain(|name, _| sample.iter().any(|(n, _, _)| n == name));
        for (name, ifindex, counters) in sample {
            let history = links.entry(name).or_insert_with(|| LinkHistory {
                ifindex,
                last: (now, counters),
                rates: VecDeque::new(),
            });
            if history.ifindex != ifindex {
                // Another container got the slot: its history starts afresh.
                *history = LinkHistory {
                    ifindex,
                    last: (now, counters),
                    rates: VecDeque::new(),
                };
                continue;
            }
            let (then, before) = history.last;
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds <= 0.0 {
                continue;
            }
            let mut rates = [0.0; 8];
            for (rate, (after, before)) in rates.iter_mut().zip(counters.iter().zip(before)) {
                *rate = after.saturating_sub(before) as f64 / seconds;
            }
            history.last = (now, counters);
            if history.rates.len() == self.capacity {
                history.rates.pop_front();
            }
            history.rates.push_back(rates);
        }
    }
}

fn sample_until_dropped(
    collector: &Weak<RatesCollector>,
    socket: &mut NetlinkSocket,
    interval: Duration,
) {
    let mut next = Instant::now();
    loop {
        next += interval;
        thread::sleep(next.saturating_duration_since(Instant::now()));
        let Some(collector) = collector.upgrade() else {
            return;
        };
        let links = match socket.links() {
            Ok(links) => links,
            Err(error) => {
                log::warn!("rate statistics: {error:#}");
                continue;
            }
        };
        let sample = links
            .iter()
            .filter(|link| link.name.starts_with(HOST_VETH_PREFIX))
            .filter_map(|link| {
                let (_, eth0) = container_eth0(socket, link).ok()??;
                Some((link.name.clone(), link.index, counters(&eth0)))
            })
            .collect();
        collector.record(Instant::now(), sample);
    }
}

/// The ifindex (in its namespace) and counters of a container's eth0, found from the
/// host end of its veth; `None` if the veth has no peer in another namespace.
fn container_eth0(host: &mut NetlinkSocket, veth: &Link) -> anyhow::Result<Option<(u32, Stats64)>> {
    let Some((nsid, peer)) = veth.peer else {
        return Ok(None);
    };
    Ok(host
        .links_in(nsid)?
        .into_iter()
        .find(|link| link.index == peer)
        .and_then(|link| link.stats)
        .map(|stats| (peer, stats)))
}

/// libprocess's `Statistics::from`: percentiles by linear interpolation between ranks;
/// none for fewer than two values.
fn percentiles(mut values: Vec<f64>) -> Option<RatePercentiles> {
    if values.len() < 2 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let position = p * (values.len() - 1) as f64;
        let index = position.floor() as usize;
        let lower = values[index];
        let upper = values[(index + 1).min(values.len() - 1)];
        lower + (upper - lower) * (position - index as f64)
    };
    Some(RatePercentiles {
        min: values[0],
        max: values[values.len() - 1],
        p50: at(0.5),
        p90: at(0.9),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        p9999: at(0.9999),
        samples: values.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_libprocess() {
        assert_eq!(percentiles(vec![5.0]), None);
        let p = percentiles(vec![30.0, 10.0, 20.0, 40.0, 50.0]).unwrap();
        assert_eq!((p.min, p.max, p.p50, p.samples), (10.0, 50.0, 30.0, 5));
        assert!((p.p90 - 46.0).abs() < 1e-9);
    }

    #[test]
    fn rates_are_deltas_per_second_and_reset_with_a_new_link() {
        let collector = RatesCollector {
            window: Duration::from_secs(1),
            interval: Duration::from_millis(500),
            capacity: 2,
            links: Mutex::new(HashMap::new()),
        };
        let t0 = Instant::now();
        let counters = |tx_bytes| {
            let mut c = [0; 8];
            c[0] = tx_bytes;
            c
        };
        collector.record(t0, vec![("netiso0".into(), 7, counters(0))]);
        for (step, bytes) in [(1, 1000), (2, 3000), (3, 6000)] {
            let at = t0 + Duration::from_millis(500 * step);
            collector.record(at, vec![("netiso0".into(), 7, counters(bytes))]);
        }
        let stats = collector.statistics("netiso0").unwrap();
        // Window of two samples: 4000/s and 6000/s.
        let rx = stats.rx_rate.unwrap();
        assert_eq!((rx.min, rx.max, rx.samples), (4000.0, 6000.0, 2));
        assert_eq!(stats.tx_rate.unwrap().max, 0.0);
        collector.record(
            t0 + Duration::from_secs(3),
            vec![("netiso0".into(), 8, counters(0))],
        );
        assert_eq!(collector.statistics("netiso0").unwrap().rx_rate, None);
        collector.record(t0 + Duration::from_secs(4), vec![]);
        assert!(collector.statistics("netiso0").is_none());
    }
}
