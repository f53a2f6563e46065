//! Ingress of a container's eth0 (inside its namespace): packets for 127.0.0.1 or ::1
//! that the datapath delivered from the host or another container. IPv6 drops ::1 on
//! any device but a loopback, so they are handed to the container's own lo.
use aya_ebpf::{bindings::TC_ACT_PIPE, programs::TcContext};

use crate::{
    datapath_log::{Program, logged_classifier},
    deliver::into_loopback,
    packet::{Parsed, may_be_for_loopback, parse},
};

/// Every network namespace's loopback device has this index.
const LOOPBACK_IFINDEX: u32 = 1;

logged_classifier!(
    container_eth0_ingress,
    Program::ContainerEth0Ingress,
    container_eth0_ingress_verdict
);

#[inline(always)]
fn container_eth0_ingress_verdict(ctx: &TcContext) -> i32 {
    // Nearly every packet is for the container's own address: passed on unparsed.
    if !may_be_for_loopback(ctx) {
        return TC_ACT_PIPE;
    }
    match parse(ctx) {
        Parsed::Ip(flow) if flow.is_for_loopback() => into_loopback(ctx, LOOPBACK_IFINDEX),
        _ => TC_ACT_PIPE,
    }
}
