//! Egress of the host's public interface: packets leaving for the network. Counted;
//! with unique egress flows, put in the host's fq_codel flow unless a container's
//! flow already claimed them; the host's own echo requests are remembered as the
//! host's, so no container's conversation can capture their replies.
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use netiso_common::{CONTAINER_PACKET_MARK, Direction, TrafficClass};

use crate::{
    echo::host_request,
    egress_flow::assign_host_flow,
    icmp::{Icmp, icmp},
    maps::{config, count_public_iface},
    packet::{Parsed, classify, parse},
};

#[classifier]
pub fn public_egress(ctx: TcContext) -> i32 {
    let class = classify(&ctx);
    // SAFETY: the context pointer is valid for the program's run.
    let container_packet = unsafe { (*ctx.skb.skb).mark } == CONTAINER_PACKET_MARK;
    if container_packet {
        // Set by a container's netkit program for this program alone.
        ctx.set_mark(0);
    }
    count_public_iface(Direction::Egress, class, ctx.len());
    if let Some(config) = config() {
        assign_host_flow(&ctx, config, class);
    }
    if !container_packet && matches!(class, TrafficClass::Ipv4Icmp | TrafficClass::Ipv6Icmp) {
        remember_host_echo(&ctx);
    }
    TC_ACT_PIPE
}

/// Packets the host itself sends never arrived on an interface; containers' packets
/// arrived on their veth (a netkit pair's carry a mark instead: see above).
#[inline(always)]
fn remember_host_echo(ctx: &TcContext) {
    // SAFETY: the context pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        return;
    }
    if let Parsed::Ip(flow) = parse(ctx)
        && let Some(Icmp::EchoRequest) = icmp(ctx, &flow)
    {
        host_request(ctx, &flow);
    }
}
