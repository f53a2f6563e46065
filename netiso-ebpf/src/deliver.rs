//! Handing a packet over: to the container that owns its port (the one place where
//! an inbound packet's fate is sealed once its owner is known), or into a loopback.
//!
//! The fast way is `bpf_redirect_peer`, straight into the ingress of the container's
//! eth0. It hands the packet over as it is: kernels before the "scrub packet on
//! bpf_redirect_peer" change (6.15, backported to some stable series; not in Debian
//! 11's 5.10) keep its `pkt_type` and its route. So a frame that was not addressed to
//! this host's MAC is marked as addressed to it here, and a packet the host itself
//! sent (it arrives on loopback carrying the host's route, with which the container's
//! TCP would look its socket up in the host's namespace) goes out of the host end of
//! the veth instead, which clears what the host attached on every kernel.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_change_type},
    programs::TcContext,
};
use netiso_common::{DatapathConfig, PortOwner};

use crate::{
    maps::{CONTAINER_SHAPING, count_container},
    translate::{self, Destination},
};

/// `skb->pkt_type` of a frame addressed to this host.
pub const PACKET_HOST: u32 = 0;

/// Where the packet being delivered comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The network, or another container: nothing of the host's is attached.
    Outside,
    /// A process on the host, through the host's loopback.
    Host,
    /// Another container, from its netkit device's transmit path, where
    /// `bpf_redirect_peer` is not allowed (it works at a tc ingress only).
    Transmit,
}

/// Counts a packet delivered to the container `owner` and returns the verdict that
/// hands it to the container: straight to its eth0's ingress, or out of the host end
/// of its veth (or netkit pair) — through its ingress limit's qdiscs when it has one,
/// and always for packets from the host or from a transmit path. A TCP or UDP packet (`destination`, its port) for a host
/// port the container publishes another port on gets that port first.
#[inline(always)]
pub fn deliver_to(
    ctx: &TcContext,
    owner: PortOwner,
    config: &DatapathConfig,
    origin: Origin,
    destination: Option<Destination>,
) -> Option<i32> {
    let slot = owner.slot()?;
    if let Some(destination) = destination
        && translate::to_container(ctx, &destination).is_err()
    {
        return Some(TC_ACT_SHOT);
    }
    count_container(slot, |c| {
        c.rx_packets += 1;
        c.rx_bytes += u64::from(ctx.len());
    });
    let shaped = CONTAINER_SHAPING
        .get(slot)
        .is_some_and(|shaping| shaping.ingress_shaped != 0);
    if shaped || origin != Origin::Outside || config.deliver_through_veth != 0 {
        // The container's eth0 takes the frame as its own only if it is addressed to
        // its MAC, which is the public interface's; loopback's frames carry zeros and
        // other containers' their gateway's.
        if ctx.load::<[u8; 6]>(0).ok()? != config.host_mac {
            ctx.store(0, &config.host_mac, 0).ok()?;
        }
        // SAFETY: helper call; an ifindex that is no longer a veth makes it return an
        // error verdict (the packet is dropped), never undefined behaviour.
        return Some(unsafe { bpf_redirect(owner.veth_ifindex, 0) } as i32);
    }
    // SAFETY: the context pointer is valid for the program's run; the helpers only
    // change the packet's metadata or fail.
    unsafe {
        if (*ctx.skb.skb).pkt_type != PACKET_HOST {
            bpf_skb_change_type(ctx.skb.skb, PACKET_HOST);
        }
        Some(bpf_redirect_peer(owner.veth_ifindex, 0) as i32)
    }
}

/// Into the ingress of the loopback device `lo_ifindex` (of the program's namespace).
/// A loopback takes a frame as addressed to it only with its own (all-zero) MAC as
/// destination; frames from elsewhere carry their gateway's or the container's.
#[inline(always)]
pub fn into_loopback(ctx: &TcContext, lo_ifindex: u32) -> i32 {
    if ctx.load::<[u8; 6]>(0).is_ok_and(|mac| mac != [0; 6]) && ctx.store(0, &[0u8; 6], 0).is_err()
    {
        return TC_ACT_SHOT;
    }
    // SAFETY: helper call.
    unsafe { bpf_redirect(lo_ifindex, u64::from(BPF_F_INGRESS)) as i32 }
}
