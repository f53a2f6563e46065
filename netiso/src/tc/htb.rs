//! Rate limits as qdiscs, over netlink: an htb root `1:` whose default class `1:1`
//! has the rate, and under it an fq_codel leaf `10:` where the kernel has fq_codel
//! (Mesos's shape). Egress limits sit on the container's eth0, ingress limits on the
//! host end of its veth. htb's class options have no support in netlink-packet-route,
//! so they are encoded here, following `include/uapi/linux/pkt_sched.h`.
use std::io;

use anyhow::Context as _;
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
};
use serde::{Deserialize, Serialize};

use crate::net::NetlinkSocket;

/// What a shaped direction gets, in bytes per second and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtbConfig {
    pub rate: u64,
    /// Rate allowed in bursts above `rate` (htb's ceil), if higher than `rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceil: Option<u64>,
    /// Bytes the class may send at once above its rate (htb's `burst`, the rate's
    /// bucket), as Mesos's `--egress_burst`: only with a ceil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

const HTB_ROOT: u32 = 0x0001_0000;
const HTB_CLASS: u32 = 0x0001_0001;
const FQ_CODEL_LEAF: u32 = 0x0010_0000;

// Attribute types of htb's options (TCA_HTB_*).
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;
/// Rates in `tc_ratespec` tell the link layer, so the kernel needs no rate table.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// htb stores times in units of 64 ns ("psched ticks").
const NS_PER_TICK: u64 = 64;
/// A full Ethernet frame: the smallest sensible bucket and quantum.
const MTU_FRAME: u64 = 1514;
/// The kernel warns about quanta above this.
const MAX_QUANTUM: u64 = 200_000;

impl HtbConfig {
    /// The bucket at `rate`: a millisecond's worth, so a limit bursts little above
    /// its rate. (htb's tools add a frame to that; for small rates that frame would
    /// be most of a second's worth. A bucket smaller than a frame only means the
    /// class goes briefly into debt after each frame.)
    fn default_burst(rate: u64) -> u64 {
        (rate / 1000).max(1)
    }

    /// The bytes of `struct tc_htb_opt` and the 64-bit rate attributes.
    fn class_options(&self) -> Vec<TcOption> {
        let ceil = self.ceil.filter(|c| *c > self.rate).unwrap_or(self.rate);
        let burst = match self.ceil {
            Some(_) => self.burst.unwrap_or_else(|| Self::default_burst(self.rate)),
            None => Self::default_burst(self.rate),
        };
        let mut parms = Vec::with_capacity(44);
        parms.extend(ratespec(self.rate));
        parms.extend(ratespec(ceil));
        parms.extend(ticks(burst, self.rate).to_ne_bytes());
        parms.extend(ticks(Self::default_burst(ceil), ceil).to_ne_bytes());
        // Explicit, instead of rate / r2q, which is far off for very low and very
        // high rates (the kernel then warns and htb bursts or stalls).
        let quantum = (self.rate / 10).clamp(MTU_FRAME, MAX_QUANTUM) as u32;
        parms.extend(quantum.to_ne_bytes());
        parms.extend(0u32.to_ne_bytes()); // level
        parms.extend(0u32.to_ne_bytes()); // prio
        let mut options = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, parms))];
        // Rates from 4 GiB/s up do not fit `tc_ratespec` and go in their own attributes.
        if self.rate > u64::from(u32::MAX) {
            options.push(u64_option(TCA_HTB_RATE64, self.rate));
        }
        if ceil > u64::from(u32::MAX) {
            options.push(u64_option(TCA_HTB_CEIL64, ceil));
        }
        options
    }
}

impl HtbConfig {
    /// The bytes a container shaped to this may send per policer window (`window_ns`)
    /// on the host side: what the htb lets out in a window at its ceil, with a quarter
    /// more, its burst and a full GSO packet on top. Traffic the htb shaped never
    /// reaches it; traffic that skipped the htb gets no more.
    pub fn policer_budget(&self, window_ns: u64) -> u64 {
        let fastest = self.ceil.unwrap_or(self.rate).max(self.rate);
        let in_window = u128::from(fastest) * u128::from(window_ns) / 1_000_000_000;
        let with_margin = (in_window + in_window / 4) as u64;
        with_margin
            .saturating_add(self.burst.unwrap_or(0))
            .saturating_add(MAX_GSO_PACKET)
    }
}

/// The largest packet a device hands on at once (a full GSO packet).
const MAX_GSO_PACKET: u64 = 65536;

/// `struct tc_ratespec` for `rate` bytes/s (saturated; the 64-bit attribute carries
/// the rest).
fn ratespec(rate: u64) -> Vec<u8> {
    let mut spec = vec![0u8; 12];
    spec[1] = TC_LINKLAYER_ETHERNET;
    spec[8..12].copy_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    spec
}

/// Time to send `bytes` at `rate` bytes/s, in psched ticks.
fn ticks(bytes: u64, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    (ns / u128::from(NS_PER_TICK)).min(u128::from(u32::MAX)) as u32
}

fn u64_option(kind: u16, value: u64) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value.to_ne_bytes().to_vec()))
}

fn message(
    ifindex: u32,
    parent: u32,
    handle: u32,
    kind: &str,
    options: Vec<TcOption>,
) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::from(parent);
    message.header.handle = TcHandle::from(handle);
    message.attributes.push(TcAttribute::Kind(kind.to_owned()));
    if !options.is_empty() {
        message.attributes.push(TcAttribute::Options(options));
    }
    message
}

/// Most segments the kernel may put in one GSO packet (its default).
const GSO_MAX_SEGS: u32 = 65535;
/// Longest a single packet may take at the rate, in milliseconds.
const MAX_PACKET_MS: u64 = 10;

/// How many segments one GSO packet leaving a device shaped to `rate` may hold. htb
/// lets a packet go once the class has any tokens left and charges it afterwards, so
/// a 64 KiB TCP packet at a few KB/s would leave seconds ahead of the limit; packets
/// of at most 10 ms at the rate keep a limit a limit. Fast limits keep full GSO.
pub fn gso_max_segs(rate: Option<u64>) -> u32 {
    match rate {
        None => GSO_MAX_SEGS,
        Some(rate) => {
            (rate * MAX_PACKET_MS / 1000 / MTU_FRAME).clamp(1, u64::from(GSO_MAX_SEGS)) as u32
        }
    }
}

/// Sets how many segments a GSO packet sent from `ifindex` may hold (see
/// [`gso_max_segs`]); for the egress device, whose own stack builds the packets.
pub fn limit_gso(socket: &mut NetlinkSocket, ifindex: u32, segments: u32) -> anyhow::Result<()> {
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::GsoMaxSegs(segments));
    socket
        .request(RouteNetlinkMessage::SetLink(link), 0)
        .with_context(|| format!("setting gso_max_segs of link {ifindex} to {segments}"))
}

/// Shapes interface `ifindex` (of the socket's namespace) to `config`, creating the
/// qdiscs or changing them in place (traffic keeps flowing), or removes the shaping
/// when `config` is `None`. Without `fq_codel` the class keeps htb's default leaf.
pub fn apply(
    socket: &mut NetlinkSocket,
    ifindex: u32,
    config: Option<&HtbConfig>,
    fq_codel: bool,
) -> anyhow::Result<()> {
    let Some(config) = config else {
        return remove(socket, ifindex);
    };
    let existing: Vec<TcMessage> = socket
        .qdiscs()?
        .into_iter()
        .filter(|q| u32::try_from(q.header.index) == Ok(ifindex))
        .collect();
    let exists = |handle: u32, kind: &str| {
        existing.iter().any(|q| {
            u32::from(q.header.handle) == handle
                && q.attributes.contains(&TcAttribute::Kind(kind.to_owned()))
        })
    };
    let mut glob = Vec::with_capacity(20);
    glob.extend(TC_HTB_PROTOVER.to_ne_bytes());
    glob.extend(10u32.to_ne_bytes()); // rate2quantum: unused, quanta are explicit
    glob.extend(1u32.to_ne_bytes()); // default class 1:1 (Mesos fix 16afd5221)
    glob.extend(0u32.to_ne_bytes()); // debug
    glob.extend(0u32.to_ne_bytes()); // direct_pkts
    let root = message(
        ifindex,
        TcHandle::ROOT.into(),
        HTB_ROOT,
        "htb",
        vec![TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob))],
    );
    // Our htb stays (htb cannot change its own options, only its classes'); any
    // other root (noqueue, or somebody's) is replaced.
    if !exists(HTB_ROOT, "htb") {
        socket
            .request(
                RouteNetlinkMessage::NewQueueDiscipline(root),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .context("adding the htb qdisc")?;
    }
    let class = message(ifindex, HTB_ROOT, HTB_CLASS, "htb", config.class_options());
    socket
        .request(
            RouteNetlinkMessage::NewTrafficClass(class),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .with_context(|| format!("setting the htb class to {config:?}"))?;
    if fq_codel && !exists(FQ_CODEL_LEAF, "fq_codel") {
        let leaf = message(ifindex, HTB_CLASS, FQ_CODEL_LEAF, "fq_codel", Vec::new());
        socket
            .request(RouteNetlinkMessage::NewQueueDiscipline(leaf), NLM_F_CREATE)
            .context("adding the fq_codel leaf")?;
    }
    Ok(())
}

/// Removes netiso's htb root from `ifindex` (and with it the class and leaf); nothing
/// to remove is fine.
pub fn remove(socket: &mut NetlinkSocket, ifindex: u32) -> anyhow::Result<()> {
    let root = message(ifindex, TcHandle::ROOT.into(), HTB_ROOT, "htb", Vec::new());
    match socket.request(RouteNetlinkMessage::DelQueueDiscipline(root), 0) {
        Ok(()) => Ok(()),
        Err(e) if is_absent(&e) => Ok(()),
        Err(e) => Err(e).context("removing the htb qdisc"),
    }
}

/// The kernel's ways of saying there is no such qdisc.
fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratespecs_saturate_and_64_bit_rates_get_their_attributes() {
        let slow = HtbConfig {
            rate: 2000,
            ceil: None,
            burst: None,
        };
        assert_eq!(slow.class_options().len(), 1);
        let fast = HtbConfig {
            rate: 11_250_000_000,
            ceil: Some(12_500_000_000),
            burst: Some(1_000_000),
        };
        let options = fast.class_options();
        assert_eq!(options.len(), 3);
        assert_eq!(&ratespec(11_250_000_000)[8..12], &u32::MAX.to_ne_bytes());
    }

    #[test]
    fn policer_budgets_leave_room_above_the_shaped_rate() {
        let limit = HtbConfig {
            rate: 125_000,
            ceil: None,
            burst: None,
        };
        // 100 ms at 125 kB/s is 12 500 bytes; a quarter more, and one GSO packet.
        assert_eq!(limit.policer_budget(100_000_000), 15_625 + 65_536);
        let bursting = HtbConfig {
            rate: 1_000_000,
            ceil: Some(2_000_000),
            burst: Some(10_000),
        };
        assert_eq!(
            bursting.policer_budget(100_000_000),
            250_000 + 10_000 + 65_536
        );
    }

    #[test]
    fn buckets_are_times_in_ticks() {
        // 1514 bytes at 2000 B/s: 0.757 s = 11 828 125 ticks of 64 ns.
        assert_eq!(ticks(1514, 2000), 11_828_125);
        assert_eq!(ticks(u64::MAX, 1), u32::MAX);
    }
}
