//! Ingress of the host's public interface: packets arriving from the network.
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};
use netiso_common::Direction;

use crate::{maps::count_public_iface, packet::classify};

#[classifier]
pub fn public_ingress(ctx: TcContext) -> i32 {
    count_public_iface(Direction::Ingress, classify(&ctx), ctx.len());
    // Continue to the next program or the host stack: counting never changes a verdict.
    TC_ACT_PIPE
}
