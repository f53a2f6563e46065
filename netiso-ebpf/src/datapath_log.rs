//! Debug logging of the datapath's decisions with aya-log: one line per packet and
//! program, through the agent's log (`netiso agent --datapath-log=debug`). Off by
//! default: the agent loads the object with aya-log's level set to off, a load-time
//! constant by which the verifier removes the logging code, so that it costs nothing.
use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_PIPE, TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use aya_log_ebpf::{
    debug,
    macro_support::{Level, level_enabled},
};
use netiso_common::DropEvent;

use crate::drop_events::describe;

/// The program deciding, as its log lines name it.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Program {
    PublicIngress,
    ContainerVethIngress,
    HostLoIngress,
    ContainerEth0Ingress,
    ContainerLoEgress,
    ContainerNetkitPeer,
}

/// Defines the tc program `$name`, whose verdict `$verdict(&ctx)` is logged as
/// `$program` (at debug; off, the verifier removes the logging). Every program but
/// the netkit one, whose verdict is turned after logging, is one of these.
macro_rules! logged_classifier {
    ($name:ident, $program:expr, $verdict:ident) => {
        #[aya_ebpf::macros::classifier]
        pub fn $name(ctx: aya_ebpf::programs::TcContext) -> i32 {
            let verdict = $verdict(&ctx);
            $crate::datapath_log::decision(&ctx, $program, verdict);
            verdict
        }
    };
}
pub(crate) use logged_classifier;

/// Logs `program`'s `verdict` on the packet in `ctx`, if debug logging is on.
#[inline(always)]
pub fn decision(ctx: &TcContext, program: Program, verdict: i32) {
    if level_enabled(Level::Debug) {
        log_decision(ctx.skb.skb, program as u8, verdict);
    }
}

/// A function of its own, like the drop reports: the programs stay as small as they
/// were.
#[inline(never)]
fn log_decision(skb: *mut __sk_buff, program: u8, verdict: i32) {
    let ctx = TcContext::new(skb);
    let program = match program {
        0 => "public_ingress",
        1 => "container_veth_ingress",
        2 => "host_lo_ingress",
        3 => "container_eth0_ingress",
        4 => "container_lo_egress",
        _ => "container_netkit_peer",
    };
    let verdict = match verdict {
        TC_ACT_OK => "pass",
        TC_ACT_SHOT => "drop",
        TC_ACT_PIPE => "continue",
        TC_ACT_REDIRECT => "redirect",
        _ => "other",
    };
    let mut flow = DropEvent::default();
    describe(&ctx, &mut flow);
    match flow.family {
        4 => debug!(
            &ctx,
            target: "netiso_datapath",
            "{}: {} proto {} {:i}:{} -> {:i}:{} len {}",
            program,
            verdict,
            flow.protocol,
            u32::from_be_bytes([flow.src[0], flow.src[1], flow.src[2], flow.src[3]]),
            flow.sport,
            u32::from_be_bytes([flow.dst[0], flow.dst[1], flow.dst[2], flow.dst[3]]),
            flow.dport,
            ctx.len()
        ),
        6 => debug!(
            &ctx,
            target: "netiso_datapath",
            "{}: {} proto {} [{:i}]:{} -> [{:i}]:{} len {}",
            program,
            verdict,
            flow.protocol,
            flow.src,
            flow.sport,
            flow.dst,
            flow.dport,
            ctx.len()
        ),
        _ => debug!(
            &ctx,
            target: "netiso_datapath",
            "{}: {} non-IP len {}",
            program,
            verdict,
            ctx.len()
        ),
    }
}
