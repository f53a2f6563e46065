//! Ingress of the host's loopback: host processes reaching a container's port through
//! the host's address, 127.0.0.1 or ::1, and replies from containers to host
//! processes (which pass: the host owns those ports).
use aya_ebpf::{bindings::TC_ACT_PIPE, programs::TcContext};

use crate::{
    datapath_log::{Program, logged_classifier},
    deliver::{Origin, deliver_to},
    maps::{config, port_owner},
    packet::{HookKind, flow_with_ports},
    translate::{Destination, Write},
};

logged_classifier!(
    host_lo_ingress,
    Program::HostLoIngress,
    host_lo_ingress_verdict
);

// A function of its own: its stack is not added to the logging's.
#[inline(never)]
fn host_lo_ingress_verdict(ctx: &TcContext) -> i32 {
    steer(ctx).unwrap_or(TC_ACT_PIPE)
}

#[inline(always)]
fn steer(ctx: &TcContext) -> Option<i32> {
    let (flow, _, dport) = flow_with_ports(ctx, HookKind::Receive)?;
    let config = config()?;
    if !(flow.is_for_loopback() || flow.is_for_host(config)) {
        return None;
    }
    let destination = Destination::of(&flow, dport, Write::Helper);
    deliver_to(
        ctx,
        port_owner(dport)?,
        config,
        Origin::Host,
        Some(destination),
    )
}
