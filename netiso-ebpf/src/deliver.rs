//! Handing a packet to the container that owns its port: the one place where an
//! inbound packet's fate is sealed once its owner is known.
use netiso_common::PortOwner;

use crate::maps::{CONTAINER_SHAPING, count_container};

/// Counts a packet delivered to the container `owner` and returns the verdict that
/// hands it to the container: straight to its eth0's ingress, or, when it has an
/// ingress limit, out of the host end of its veth through the limit's qdiscs.
#[inline(always)]
pub fn deliver_to(owner: PortOwner, bytes: u32) -> Option<i32> {
    let slot = owner.slot()?;
    count_container(slot, |c| {
        c.rx_packets += 1;
        c.rx_bytes += u64::from(bytes);
    });
    let shaped = CONTAINER_SHAPING
        .get(slot)
        .is_some_and(|shaping| shaping.ingress_shaped != 0);
    // SAFETY: helper calls; an ifindex that is no longer a veth makes them return an
    // error verdict (the packet is dropped), never undefined behaviour.
    Some(unsafe {
        if shaped {
            aya_ebpf::helpers::bpf_redirect(owner.veth_ifindex, 0)
        } else {
            aya_ebpf::helpers::bpf_redirect_peer(owner.veth_ifindex, 0)
        }
    } as i32)
}
