//! `netiso top`: containers' live rates, refreshed every second from the agent's
//! statistics (the control API's `/v1/statistics`): received and sent bit/s and
//! packets/s, datapath drops per second and their main reason, the egress rate limit
//! and its use, the ephemeral range. Full-screen ([`screen`]), or one plain table
//! with `--once`.
mod screen;

use std::{collections::BTreeMap, path::Path, time::Duration};

use hyper::Method;
use serde_json::Value;

use crate::control::client;

/// One container's counters at one moment.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds, as the agent stamped the statistics.
    time: f64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
    /// Datapath drops by reason.
    drops: BTreeMap<String, u64>,
    tx_limit: Option<u64>,
    ephemeral: Option<(u64, u64)>,
}

/// One container's row: rates between two samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub container: String,
    pub rx_bits: f64,
    pub tx_bits: f64,
    pub rx_packets: f64,
    pub tx_packets: f64,
    pub drops: f64,
    /// The reason most drops had in the interval.
    pub top_drop: Option<String>,
    /// Egress limit in bit/s, and the share of it in use.
    pub tx_limit_bits: Option<f64>,
    pub tx_limit_use: Option<f64>,
    pub ephemeral: Option<(u64, u64)>,
}

/// What the rows are ordered by (largest first, names A to Z).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Received plus sent bit/s.
    Traffic,
    Rx,
    Tx,
    Drops,
    /// Share of the egress limit in use.
    Limit,
    Container,
}

impl SortKey {
    fn sort(self, rows: &mut [Row]) {
        let by = |f: fn(&Row) -> f64| {
            move |a: &Row, b: &Row| f(b).total_cmp(&f(a)).then(a.container.cmp(&b.container))
        };
        match self {
            SortKey::Traffic => rows.sort_by(by(|r| r.rx_bits + r.tx_bits)),
            SortKey::Rx => rows.sort_by(by(|r| r.rx_bits)),
            SortKey::Tx => rows.sort_by(by(|r| r.tx_bits)),
            SortKey::Drops => rows.sort_by(by(|r| r.drops)),
            SortKey::Limit => rows.sort_by(by(|r| r.tx_limit_use.unwrap_or(-1.0))),
            SortKey::Container => rows.sort_by(|a, b| a.container.cmp(&b.container)),
        }
    }
}

/// Reads every container's counters from the agent.
fn sample(socket: &Path) -> anyhow::Result<BTreeMap<String, Sample>> {
    let answer = client::call(socket, Method::GET, "/v1/statistics", None)?;
    let number = |v: &Value, key: &str| v[key].as_u64().unwrap_or_default();
    Ok(answer
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| {
            let id = entry["executor_id"].as_str()?.to_owned();
            let s = &entry["statistics"];
            let datapath = &s["netiso_datapath_statistics"];
            let drops = datapath
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let reason = k
                        .strip_prefix("tx_dropped_")
                        .or_else(|| k.strip_prefix("rx_dropped_"))?;
                    Some((reason.to_owned(), v.as_u64().unwrap_or_default()))
                })
                .collect();
            let sample = Sample {
                time: s["timestamp"].as_f64().unwrap_or_default(),
                rx_bytes: number(s, "net_rx_bytes"),
                tx_bytes: number(s, "net_tx_bytes"),
                rx_packets: number(s, "net_rx_packets"),
                tx_packets: number(s, "net_tx_packets"),
                drops,
                tx_limit: s["net_tx_rate_limit"].as_u64(),
                ephemeral: s["net_ephemeral_ports"]["begin"]
                    .as_u64()
                    .zip(s["net_ephemeral_ports"]["end"].as_u64()),
            };
            Some((id, sample))
        })
        .collect())
}

/// Rates of the containers in both samples, sorted by `key`.
fn rows(
    before: &BTreeMap<String, Sample>,
    after: &BTreeMap<String, Sample>,
    key: SortKey,
) -> Vec<Row> {
    let mut rows: Vec<Row> = after
        .iter()
        .filter_map(|(id, now)| {
            let then = before.get(id)?;
            let seconds = (now.time - then.time).max(1e-3);
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
            let drop_deltas: Vec<(&String, u64)> = now
                .drops
                .iter()
                .map(|(reason, n)| {
                    let was = then.drops.get(reason).copied().unwrap_or_default();
                    (reason, n.saturating_sub(was))
                })
                .collect();
            let dropped: u64 = drop_deltas.iter().map(|(_, n)| n).sum();
            let top_drop = drop_deltas
                .iter()
                .filter(|(_, n)| *n > 0)
                .max_by_key(|(_, n)| *n)
                .map(|(reason, _)| (*reason).clone());
            let tx_bits = rate(then.tx_bytes, now.tx_bytes) * 8.0;
            let tx_limit_bits = now.tx_limit.map(|l| l as f64 * 8.0);
            Some(Row {
                container: id.clone(),
                rx_bits: rate(then.rx_bytes, now.rx_bytes) * 8.0,
                tx_bits,
                rx_packets: rate(then.rx_packets, now.rx_packets),
                tx_packets: rate(then.tx_packets, now.tx_packets),
                drops: dropped as f64 / seconds,
                top_drop,
                tx_limit_bits,
                tx_limit_use: tx_limit_bits.filter(|l| *l > 0.0).map(|l| tx_bits / l),
                ephemeral: now.ephemeral,
            })
        })
        .collect();
    key.sort(&mut rows);
    rows
}

/// Column titles, in the order of [`cells`].
const HEADER: [&str; 10] = [
    "CONTAINER",
    "RX bit/s",
    "TX bit/s",
    "RX pkt/s",
    "TX pkt/s",
    "DROPS/s",
    "MOST DROPPED",
    "TX LIMIT",
    "LIMIT USE",
    "EPHEMERAL",
];

/// A row's cells as text.
fn cells(row: &Row) -> [String; 10] {
    [
        row.container.clone(),
        si(row.rx_bits, "bit/s"),
        si(row.tx_bits, "bit/s"),
        si(row.rx_packets, ""),
        si(row.tx_packets, ""),
        si(row.drops, ""),
        row.top_drop.clone().unwrap_or_else(|| "-".into()),
        row.tx_limit_bits.map_or("-".into(), |l| si(l, "bit/s")),
        row.tx_limit_use
            .map_or("-".into(), |u| format!("{:.0}%", u * 100.0)),
        row.ephemeral
            .map_or("-".into(), |(b, e)| format!("{b}-{e}")),
    ]
}

/// `value` with an SI prefix: 950, 1.2k, 34.5M.
fn si(value: f64, unit: &str) -> String {
    let (scaled, prefix) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| value >= *scale)
        .map_or((value, ""), |(scale, p)| (value / scale, p));
    let number = if prefix.is_empty() {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
    };
    match unit {
        "" => format!("{number}{prefix}"),
        unit => format!("{number} {prefix}{unit}"),
    }
}

/// The plain table of `rows`, columns aligned.
fn table(rows: &[Row]) -> String {
    let lines: Vec<[String; 10]> = std::iter::once(HEADER.map(str::to_owned))
        .chain(rows.iter().map(cells))
        .collect();
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or_default())
        .collect();
    lines
        .iter()
        .map(|line| {
            let text: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| match c {
                    0 | 6 | 9 => format!("{cell:<w$}"),
                    _ => format!("{cell:>w$}"),
                })
                .collect();
            text.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

/// Runs `netiso top`: the full-screen view, or with `once` one table of the rates
/// over `interval`.
pub fn run(socket: &Path, once: bool, interval: Duration, sort: SortKey) -> anyhow::Result<()> {
    if once {
        let before = sample(socket)?;
        std::thread::sleep(interval);
        let after = sample(socket)?;
        print!("{}", table(&rows(&before, &after, sort)));
        return Ok(());
    }
    let mut sampler = Sampler {
        socket: socket.to_owned(),
        last: sample(socket)?,
    };
    screen::run(&mut sampler, interval, sort)
}

/// Takes a sample every interval, turning it into rows against the previous one.
struct Sampler {
    socket: std::path::PathBuf,
    last: BTreeMap<String, Sample>,
}

impl Sampler {
    fn rows(&mut self, sort: SortKey) -> anyhow::Result<Vec<Row>> {
        let now = sample(&self.socket)?;
        let rows = rows(&self.last, &now, sort);
        self.last = now;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, rx_bytes: u64, port_not_owned: u64, limit: Option<u64>) -> Sample {
        Sample {
            time,
            rx_bytes,
            tx_bytes: rx_bytes / 2,
            rx_packets: rx_bytes / 100,
            tx_packets: 0,
            drops: [
                ("port_not_owned".to_owned(), port_not_owned),
                ("malformed".to_owned(), 1),
            ]
            .into(),
            tx_limit: limit,
            ephemeral: Some((30001, 30016)),
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_rows_sort_by_the_key() {
        let before: BTreeMap<_, _> = [
            ("a".to_owned(), sample(10.0, 1000, 0, Some(1000))),
            ("b".to_owned(), sample(10.0, 0, 0, None)),
        ]
        .into();
        let after: BTreeMap<_, _> = [
            ("a".to_owned(), sample(12.0, 3000, 10, Some(1000))),
            ("b".to_owned(), sample(12.0, 100_000, 0, None)),
            ("new".to_owned(), sample(12.0, 5, 0, None)),
        ]
        .into();
        let by_traffic = rows(&before, &after, SortKey::Traffic);
        assert_eq!(
            by_traffic
                .iter()
                .map(|r| r.container.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"],
            "a container without an earlier sample has no rates yet"
        );
        let a = &rows(&before, &after, SortKey::Drops)[0];
        assert_eq!(a.container, "a");
        assert_eq!(a.rx_bits, 1000.0 * 8.0);
        assert_eq!(a.drops, 5.0);
        assert_eq!(a.top_drop.as_deref(), Some("port_not_owned"));
        // 500 B/s sent against a 1000 B/s limit.
        assert_eq!(a.tx_limit_use, Some(0.5));
        assert_eq!(
            cells(a)[1..].to_vec(),
            [
                "8.0 kbit/s",
                "4.0 kbit/s",
                "10",
                "0",
                "5",
                "port_not_owned",
                "8.0 kbit/s",
                "50%",
                "30001-30016"
            ]
        );
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let before: BTreeMap<_, _> = [("web".to_owned(), sample(0.0, 0, 0, None))].into();
        let after: BTreeMap<_, _> = [("web".to_owned(), sample(1.0, 2_500_000, 0, None))].into();
        let text = table(&rows(&before, &after, SortKey::Traffic));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CONTAINER  "), "{text}");
        assert!(lines[1].starts_with("web        "), "{text}");
        assert!(lines[1].contains("20.0 Mbit/s"), "{text}");
    }
}
