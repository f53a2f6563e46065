//! Unique egress flows (`--egress_unique_flow_per_container`): an fq_codel qdisc on
//! the public interface, and the pool of its flows that containers get one each of.
//! The datapath puts each packet in its flow (netiso-ebpf's `egress_flow.rs`), so the
//! kernel keeps one container's backlog from delaying another's (MESOS-2422).
use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use netiso_common::FIRST_CONTAINER_EGRESS_FLOW;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcQdiscFqCodelOption},
};

use crate::net::NetlinkSocket;

/// fq_codel's own default flow count, which Mesos kept.
const DEFAULT_FLOWS: u32 = 1024;
/// The most flows fq_codel accepts.
const MAX_FLOWS: u32 = 65536;

/// Where the qdisc goes, from `--egress_flow_classifier_parent`: `root`, or a class
/// `X:Y` (hexadecimal, as tc writes handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQdiscParent(u32);

impl FlowQdiscParent {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text == "root" {
            return Ok(Self(TcHandle::ROOT.into()));
        }
        let parsed = text.split_once(':').and_then(|(major, minor)| {
            let major = u16::from_str_radix(major, 16).ok()?;
            let minor = if minor.is_empty() {
                0
            } else {
                u16::from_str_radix(minor, 16).ok()?
            };
            Some((major, minor))
        });
        match parsed {
            Some((major, minor)) if major < 0xffff && (major, minor) != (0, 0) => {
                Ok(Self(u32::from(major) << 16 | u32::from(minor)))
            }
            _ => bail!(
                "--egress_flow_classifier_parent must be `root` or a class like 1:0 (hexadecimal major:minor); got '{text}'"
            ),
        }
    }

    /// The handle netiso gives a qdisc it creates there: `1:` at the root, else the
    /// parent's major + 1 (Mesos's rule; the major must not be taken on that link).
    fn new_handle(self) -> u32 {
        if self.0 == u32::from(TcHandle::ROOT) {
            0x0001_0000
        } else {
            ((self.0 >> 16) + 1) << 16
        }
    }
}

/// The fq_codel whose flows containers get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowQdisc {
    /// `major:0`.
    pub handle: u32,
    /// Its flow count: flows are 1 ..= flows.
    pub flows: u32,
}

impl FlowQdisc {
    /// The priority that puts a packet into `flow`.
    pub fn classid(&self, flow: u32) -> u32 {
        self.handle | flow
    }
}

/// Makes sure an fq_codel sits at `parent` of link `ifindex`, with at least
/// `containers` flows for containers (when netiso creates it), and returns it. An
/// fq_codel someone put there is kept, as are its flows; the kernel's default qdisc
/// (handle 0, whatever its kind) is replaced; any other qdisc is somebody's and is an
/// error.
pub fn install(
    socket: &mut NetlinkSocket,
    ifindex: u32,
    iface: &str,
    parent: FlowQdiscParent,
    containers: u32,
) -> anyhow::Result<FlowQdisc> {
    let at_root = parent.0 == u32::from(TcHandle::ROOT);
    let place = if at_root {
        "root".to_owned()
    } else {
        format!("parent {}", tc_handle(parent.0))
    };
    let existing = socket.qdiscs()?.into_iter().find(|q| {
        u32::try_from(q.header.index) == Ok(ifindex) && u32::from(q.header.parent) == parent.0
    });
    if let Some(qdisc) = &existing {
        let handle = u32::from(qdisc.header.handle);
        match kind(qdisc) {
            // Handle 0 is the kernel's default qdisc (`default_qdisc=fq_codel`): its
            // flows cannot be named by a priority without catching the host's own
            // priorities 0-6, so it is replaced like any default.
            Some("fq_codel") if handle != 0 => {
                return Ok(FlowQdisc {
                    handle,
                    flows: flow_count(qdisc).unwrap_or(DEFAULT_FLOWS),
                });
            }
            Some(other) if handle != 0 => bail!(
                "{iface} already has qdisc {other} {} at {place}, where unique egress flows need fq_codel; remove it (tc qdisc del dev {iface} {place}) or pick another place with --egress_flow_classifier_parent",
                tc_handle(handle)
            ),
            _ => {}
        }
    }
    let flows = (containers + FIRST_CONTAINER_EGRESS_FLOW - 1).clamp(DEFAULT_FLOWS, MAX_FLOWS);
    let handle = parent.new_handle();
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.parent = TcHandle::from(parent.0);
    message.header.handle = TcHandle::from(handle);
    message
        .attributes
        .push(TcAttribute::Kind("fq_codel".to_owned()));
    message
        .attributes
        .push(TcAttribute::Options(vec![TcOption::FqCodel(
            TcQdiscFqCodelOption::Flows(flows),
        )]));
    socket
        .request(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .with_context(|| {
            let hint = if at_root {
                String::new()
            } else {
                format!(
                    " (class {} must exist and handle {} be free; see tc class show dev {iface})",
                    tc_handle(parent.0),
                    tc_handle(handle)
                )
            };
            format!("adding an fq_codel qdisc with {flows} flows at {place} of {iface}{hint}")
        })?;
    Ok(FlowQdisc { handle, flows })
}

/// A handle as tc writes it: hexadecimal `major:minor`.
fn tc_handle(handle: u32) -> String {
    format!("{:x}:{:x}", handle >> 16, handle & 0xffff)
}

fn kind(qdisc: &TcMessage) -> Option<&str> {
    qdisc.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(kind) => Some(kind.as_str()),
        _ => None,
    })
}

fn flow_count(qdisc: &TcMessage) -> Option<u32> {
    qdisc.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::FqCodel(TcQdiscFqCodelOption::Flows(flows)) => Some(*flows),
            _ => None,
        }),
        _ => None,
    })
}

/// The qdisc and which of its container flows are free.
#[derive(Clone, Debug)]
pub struct EgressFlows {
    pub qdisc: FlowQdisc,
    free: BTreeSet<u32>,
}

impl EgressFlows {
    pub fn new(qdisc: FlowQdisc) -> Self {
        Self {
            qdisc,
            free: (FIRST_CONTAINER_EGRESS_FLOW..=qdisc.flows).collect(),
        }
    }

    /// The lowest free flow, now taken; `None` when every flow is in use.
    pub fn take(&mut self) -> Option<u32> {
        self.free.pop_first()
    }

    /// Takes `flow` for a recovered container; false if it is not a free flow.
    pub fn take_exact(&mut self, flow: u32) -> bool {
        self.free.remove(&flow)
    }

    /// Gives a flow back; giving back a flow that is free or not ours is harmless.
    pub fn give_back(&mut self, flow: u32) {
        if (FIRST_CONTAINER_EGRESS_FLOW..=self.qdisc.flows).contains(&flow) {
            self.free.insert(flow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_parse_like_tc_handles() {
        assert_eq!(
            FlowQdiscParent::parse("root").unwrap().new_handle(),
            0x0001_0000
        );
        let parent = FlowQdiscParent::parse("1:a").unwrap();
        assert_eq!(parent, FlowQdiscParent(0x0001_000a));
        assert_eq!(parent.new_handle(), 0x0002_0000);
        assert_eq!(FlowQdiscParent::parse("8001:").unwrap().0, 0x8001_0000);
        for bad in ["", "1", "x:1", "0:0", "ffff:0", "1:2:3", "10000:0"] {
            let error = FlowQdiscParent::parse(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("--egress_flow_classifier_parent must be"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn flows_are_handed_out_lowest_first_and_come_back() {
        let mut flows = EgressFlows::new(FlowQdisc {
            handle: 0x0001_0000,
            flows: 5,
        });
        assert_eq!(flows.qdisc.classid(4), 0x0001_0004);
        assert!(flows.take_exact(4));
        assert!(!flows.take_exact(4));
        assert!(
            !flows.take_exact(2),
            "the host's flows are never a container's"
        );
        assert_eq!(flows.take(), Some(3));
        assert_eq!(flows.take(), Some(5));
        assert_eq!(flows.take(), None);
        flows.give_back(4);
        flows.give_back(1);
        assert_eq!(flows.take(), Some(4));
        assert_eq!(flows.take(), None);
    }
}
