//! The agent's statistics as a snapshot, and the rule that counters never go back
//! (across restarts, kills and upgrades).
use std::{collections::BTreeMap, net::SocketAddr};

use serde_json::Value;

use crate::{agent::http_get, netns::Netns};

/// Every container's statistics by id, as `/monitor/statistics` served them.
pub struct StatisticsSnapshot(BTreeMap<String, Value>);

impl StatisticsSnapshot {
    /// Scrapes the agent serving HTTP at `addr` in `ns`.
    pub fn take(ns: &Netns, addr: SocketAddr) -> Self {
        let all = http_get(ns, addr, "/monitor/statistics").json();
        Self(
            all.as_array()
                .expect("a statistics array")
                .iter()
                .map(|entry| {
                    (
                        entry["executor_id"].as_str().unwrap().to_owned(),
                        entry["statistics"].clone(),
                    )
                })
                .collect(),
        )
    }
}

/// Fails if a container of `before` is missing from `after`, or any of its counters
/// (every datapath counter and the link's packets and bytes) went down.
pub fn assert_no_counter_went_backwards(before: &StatisticsSnapshot, after: &StatisticsSnapshot) {
    for (id, old) in &before.0 {
        let new = after
            .0
            .get(id)
            .unwrap_or_else(|| panic!("{id} has no statistics any more"));
        let datapath = old["netiso_datapath_statistics"]
            .as_object()
            .expect("datapath statistics");
        let counters = datapath
            .keys()
            .map(|key| format!("/netiso_datapath_statistics/{key}"))
            .chain(
                [
                    "net_rx_packets",
                    "net_rx_bytes",
                    "net_tx_packets",
                    "net_tx_bytes",
                ]
                .map(|key| format!("/{key}")),
            );
        for pointer in counters {
            let (was, is) = (
                old.pointer(&pointer).and_then(Value::as_u64),
                new.pointer(&pointer).and_then(Value::as_u64),
            );
            let (Some(was), Some(is)) = (was, is) else {
                panic!("{id}: {pointer} missing or not a count: {was:?} then {is:?}");
            };
            assert!(is >= was, "{id}: {pointer} went back from {was} to {is}");
        }
    }
}
