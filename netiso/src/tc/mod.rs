//! Traffic control: the qdiscs netiso puts on links, over netlink. [`htb`] shapes a
//! container's directions (Mesos's htb + fq_codel), [`rate_policy`] decides the rates
//! from the agent's flags, [`egress_flows`] gives each container its own flow of the
//! public interface's fq_codel.
pub mod egress_flows;
pub mod htb;
pub mod rate_policy;

use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcMessage},
};

use crate::net::NetlinkSocket;

pub use egress_flows::{EgressFlows, FlowQdiscParent};
pub use htb::HtbConfig;
pub use rate_policy::RatePolicy;

/// Answer types of qdisc and filter dumps (uapi rtnetlink.h).
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
/// Parents of the filters on a clsact qdisc's ingress and egress
/// (TC_H_CLSACT:TC_H_MIN_INGRESS and TC_H_CLSACT:TC_H_MIN_EGRESS).
pub const CLSACT_INGRESS: u32 = 0xffff_fff2;
pub const CLSACT_EGRESS: u32 = 0xffff_fff3;

impl NetlinkSocket {
    /// Every qdisc of the socket's namespace.
    pub fn qdiscs(&mut self) -> anyhow::Result<Vec<TcMessage>> {
        Ok(self
            .dump(
                RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
                RTM_NEWQDISC,
            )?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(qdisc) => Some(qdisc),
                _ => None,
            })
            .collect())
    }

    /// The priorities of the bpf filters of link `ifindex` under `parent` (such as
    /// [`CLSACT_INGRESS`]); none when it has no clsact qdisc.
    pub fn bpf_filter_priorities(&mut self, ifindex: u32, parent: u32) -> anyhow::Result<Vec<u16>> {
        let mut request = TcMessage::with_index(i32::try_from(ifindex)?);
        request.header.parent = parent.into();
        let Ok(filters) = self.dump(
            RouteNetlinkMessage::GetTrafficFilter(request),
            RTM_NEWTFILTER,
        ) else {
            return Ok(Vec::new());
        };
        let bpf = TcAttribute::Kind("bpf".to_owned());
        Ok(filters
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(filter) => Some(filter),
                _ => None,
            })
            .filter(|filter| filter.attributes.contains(&bpf))
            // info holds the priority above the protocol.
            .filter_map(|filter| u16::try_from(filter.header.info >> 16).ok())
            .collect())
    }
}
