//! Unique egress flows: which flow of the public interface's fq_codel a packet leaves
//! in. fq_codel takes a packet's flow from its priority when the priority names the
//! qdisc (`major:flow`), so setting the priority is all the steering there is: no
//! per-container filter on the public interface (Mesos had one per port block).
use aya_ebpf::programs::TcContext;
use netiso_common::{
    DatapathConfig, FIRST_CONTAINER_EGRESS_FLOW, HOST_CONTROL_EGRESS_FLOW, HOST_EGRESS_FLOW,
    TrafficClass,
};

use crate::maps::CONTAINER_SHAPING;

const MAJOR_MASK: u32 = 0xffff_0000;
const MINOR_MASK: u32 = 0x0000_ffff;

#[inline(always)]
fn priority(ctx: &TcContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    unsafe { (*ctx.skb.skb).priority }
}

#[inline(always)]
fn set_priority(ctx: &TcContext, priority: u32) {
    // SAFETY: as above; tc programs may write the priority.
    unsafe { (*ctx.skb.skb).priority = priority }
}

/// Puts a packet container `slot` sends to the network into the container's own flow,
/// if it has one (never without unique flows: no lookup then).
#[inline(always)]
pub fn assign_container_flow(ctx: &TcContext, config: &DatapathConfig, slot: u32) {
    if config.egress_flows_qdisc == 0 {
        return;
    }
    if let Some(shaping) = CONTAINER_SHAPING.get(slot)
        && shaping.egress_flow_classid != 0
    {
        set_priority(ctx, shaping.egress_flow_classid);
    }
}

/// Puts a packet leaving the public interface that no container flow claimed into the
/// host's flow: ARP and ICMP in one, everything else in another. A container's packet
/// arrives here with its flow already set by the veth program.
#[inline(always)]
pub fn assign_host_flow(ctx: &TcContext, config: &DatapathConfig, class: TrafficClass) {
    let qdisc = config.egress_flows_qdisc;
    if qdisc == 0 {
        return;
    }
    let current = priority(ctx);
    if current & MAJOR_MASK == qdisc && current & MINOR_MASK >= FIRST_CONTAINER_EGRESS_FLOW {
        return;
    }
    let flow = match class {
        TrafficClass::Arp | TrafficClass::Ipv4Icmp | TrafficClass::Ipv6Icmp => {
            HOST_CONTROL_EGRESS_FLOW
        }
        _ => HOST_EGRESS_FLOW,
    };
    set_priority(ctx, qdisc | flow);
}
