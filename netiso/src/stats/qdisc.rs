//! Traffic control statistics: the qdiscs netiso knows by name, read from a qdisc dump.
//! Egress shaping lives on the container's eth0 (`bw_limit` is its htb,
//! `bloat_reduction` its fq_codel); ingress shaping on the host end of the veth, with
//! the same names prefixed `ingress_`. Other qdiscs (noqueue, clsact, …) are not
//! reported, and a name is reported only while its qdisc exists.
use netlink_packet_core::Nla as _;
use netlink_packet_route::tc::{TcAttribute, TcMessage, TcStats2};
use serde::Serialize;

/// One element of Mesos's `net_traffic_control_statistics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficControlStatistics {
    pub id: String,
    pub backlog: u64,
    pub bytes: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub packets: u64,
    pub qlen: u64,
    pub ratebps: u64,
    pub ratepps: u64,
    pub requeues: u64,
}

/// Kernel attribute carrying the 64-bit packet count once it outgrows 32 bits.
const TCA_STATS_PKT64: u16 = 8;

/// Statistics of the egress qdiscs on the container's eth0 (`ifindex` inside its
/// namespace).
pub fn egress_statistics(qdiscs: &[TcMessage], ifindex: u32) -> Vec<TrafficControlStatistics> {
    named_statistics(qdiscs, ifindex, "")
}

/// Statistics of the ingress qdiscs on the host end of a container's veth.
pub fn ingress_statistics(qdiscs: &[TcMessage], ifindex: u32) -> Vec<TrafficControlStatistics> {
    named_statistics(qdiscs, ifindex, "ingress_")
}

fn named_statistics(
    qdiscs: &[TcMessage],
    ifindex: u32,
    prefix: &str,
) -> Vec<TrafficControlStatistics> {
    let mut found: Vec<_> = qdiscs
        .iter()
        .filter(|q| u32::try_from(q.header.index) == Ok(ifindex))
        .filter_map(|q| {
            let name = match kind(q)? {
                "htb" => "bw_limit",
                "fq_codel" => "bloat_reduction",
                _ => return None,
            };
            Some(statistics(q, format!("{prefix}{name}")))
        })
        .collect();
    // bw_limit before bloat_reduction, as Mesos lists them.
    found.sort_by(|a, b| b.id.cmp(&a.id));
    found
}

fn kind(qdisc: &TcMessage) -> Option<&str> {
    qdisc.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(kind) => Some(kind.as_str()),
        _ => None,
    })
}

/// Reads the modern statistics (64-bit bytes) and takes the rate estimate, which only
/// the old structure carries, from there.
fn statistics(qdisc: &TcMessage, id: String) -> TrafficControlStatistics {
    let mut stats = TrafficControlStatistics {
        id,
        ..Default::default()
    };
    let mut packets64 = None;
    for attribute in &qdisc.attributes {
        match attribute {
            TcAttribute::Stats(old) => {
                stats.ratebps = old.bps.into();
                stats.ratepps = old.pps.into();
            }
            TcAttribute::Stats2(parts) => {
                for part in parts {
                    match part {
                        TcStats2::Basic(basic) => {
                            stats.bytes = basic.bytes;
                            stats.packets = basic.packets.into();
                        }
                        TcStats2::Queue(queue) => {
                            stats.qlen = queue.qlen.into();
                            stats.backlog = queue.backlog.into();
                            stats.drops = queue.drops.into();
                            stats.requeues = queue.requeues.into();
                            stats.overlimits = queue.overlimits.into();
                        }
                        TcStats2::Other(nla) if nla.kind() == TCA_STATS_PKT64 => {
                            let mut value = [0u8; 8];
                            if nla.value_len() == value.len() {
                                nla.emit_value(&mut value);
                                packets64 = Some(u64::from_ne_bytes(value));
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(packets) = packets64 {
        stats.packets = packets;
    }
    stats
}
