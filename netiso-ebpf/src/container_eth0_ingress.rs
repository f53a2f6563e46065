//! Ingress of a container's eth0 (inside its namespace): packets for 127.0.0.1 or ::1
//! that the datapath delivered from the host or another container. IPv6 drops ::1 on
//! any device but a loopback, so they are handed to the container's own lo.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_PIPE},
    helpers::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};

use crate::packet::{Parsed, parse};

/// Every network namespace's loopback device has this index.
const LOOPBACK_IFINDEX: u32 = 1;

#[classifier]
pub fn container_eth0_ingress(ctx: TcContext) -> i32 {
    match parse(&ctx) {
        // SAFETY: helper call.
        Parsed::Ip(flow) if flow.is_for_loopback() => unsafe {
            bpf_redirect(LOOPBACK_IFINDEX, u64::from(BPF_F_INGRESS)) as i32
        },
        _ => TC_ACT_PIPE,
    }
}
