//! Ingress of a container's lo: the container talking to its own addresses (the
//! host's, 127.0.0.1, ::1). Traffic to ports the container owns stays inside; traffic
//! to any other port is sent out through eth0, where the host side delivers it to
//! the port's owner, another container or the host, as Mesos did.
//!
//! A program here cannot tell which container it serves (no netns cookie on 6.1), so
//! each container gets its own loaded copy with these constants set at load time.
use aya_ebpf::{
    bindings::TC_ACT_PIPE, helpers::bpf_redirect, macros::classifier, programs::TcContext,
};

use crate::{
    maps::port_owner,
    packet::{Fragment, Parsed, parse, ports},
    translate::host_port,
};

/// This copy's container slot.
#[unsafe(no_mangle)]
static CONTAINER_SLOT: u32 = 0;
/// The ifindex of eth0 inside the container's namespace.
#[unsafe(no_mangle)]
static CONTAINER_ETH0_IFINDEX: u32 = 0;

#[classifier]
pub fn container_lo_ingress(ctx: TcContext) -> i32 {
    let Parsed::Ip(flow) = parse(&ctx) else {
        return TC_ACT_PIPE;
    };
    if !flow.has_ports() || flow.fragment == Fragment::Later {
        // ICMP to its own addresses is answered by the container itself.
        return TC_ACT_PIPE;
    }
    let Some((_, dport)) = ports(&ctx, &flow) else {
        return TC_ACT_PIPE;
    };
    // SAFETY: read_volatile keeps the compiler from folding the load-time constants.
    let (slot, eth0) = unsafe {
        (
            core::ptr::read_volatile(&CONTAINER_SLOT),
            core::ptr::read_volatile(&CONTAINER_ETH0_IFINDEX),
        )
    };
    // Its own ports, and the ports inside it that it publishes on a host port (the
    // datapath translated the host port on the way in).
    if port_owner(dport).and_then(|o| o.slot()) == Some(slot) || host_port(slot, dport).is_some() {
        return TC_ACT_PIPE;
    }
    // SAFETY: helper call; out through eth0's egress to the host-side veth.
    unsafe { bpf_redirect(eth0, 0) as i32 }
}
