//! Egress of the host's public interface: packets leaving for the network.
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use netiso_common::Direction;

use crate::{maps::count_public_iface, packet::classify};

#[classifier]
pub fn public_egress(ctx: TcContext) -> i32 {
    count_public_iface(Direction::Egress, classify(&ctx), ctx.len());
    TC_ACT_PIPE
}
