//! A container's egress limit, enforced on the host side. The htb on the container's
//! own eth0 shapes what it sends, but a container with a raw socket can skip its own
//! qdiscs (`PACKET_QDISC_BYPASS`). So what it sends also meets a policer here, whose
//! budget is a little above its limit, which well-shaped traffic never reaches: the
//! bytes it sent in the current window (100 ms), added atomically, against the bytes
//! its limit allows in a window.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use netiso_common::POLICER_WINDOW_NS;

use crate::maps::EGRESS_POLICERS;

/// Whether container `slot` may send `bytes` now (they are charged either way).
#[inline(always)]
pub fn conforms(slot: u32, bytes: u32) -> bool {
    let Some(policer) = EGRESS_POLICERS.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: a valid map value; the budget is only written by the agent.
    let budget = unsafe { (*policer).window_budget };
    if budget == 0 {
        return true;
    }
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: map value fields, alive as long as the map. A new window is started
    // without atomics: two CPUs starting it at once lose at most a few charges.
    unsafe {
        if now.wrapping_sub((*policer).window_start_ns) >= POLICER_WINDOW_NS {
            (*policer).window_start_ns = now;
            (*policer).window_bytes = 0;
        }
        let charged = &raw mut (*policer).window_bytes;
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(charged, u64::from(bytes));
        // What this CPU and any other added so far (the window's first packets are
        // never refused, whatever another CPU does meanwhile).
        core::ptr::read_volatile(charged) <= budget
    }
}
