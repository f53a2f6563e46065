//! Egress of the host's public interface: packets leaving for the network. Counted,
//! and, with unique egress flows, put in the host's fq_codel flow unless a container's
//! flow already claimed them.
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use netiso_common::Direction;

use crate::{
    egress_flow::assign_host_flow,
    maps::{config, count_public_iface},
    packet::classify,
};

#[classifier]
pub fn public_egress(ctx: TcContext) -> i32 {
    let class = classify(&ctx);
    count_public_iface(Direction::Egress, class, ctx.len());
    if let Some(config) = config() {
        assign_host_flow(&ctx, config, class);
    }
    TC_ACT_PIPE
}
