//! Traffic control: the qdiscs netiso puts on links, over netlink. [`htb`] shapes a
//! container's directions (Mesos's htb + fq_codel), [`rate_policy`] decides the rates
//! from the agent's flags, [`egress_flows`] gives each container its own flow of the
//! public interface's fq_codel.
pub mod egress_flows;
pub mod htb;
pub mod rate_policy;

use netlink_packet_route::{RouteNetlinkMessage, tc::TcMessage};

use crate::net::NetlinkSocket;

pub use egress_flows::{EgressFlows, FlowQdiscParent};
pub use htb::HtbConfig;
pub use rate_policy::RatePolicy;

/// Answer type of a qdisc dump (uapi rtnetlink.h).
const RTM_NEWQDISC: u16 = 36;

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
}
