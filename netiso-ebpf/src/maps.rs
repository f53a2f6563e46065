//! Every map of the datapath. BTF-defined, so `bpftool map dump` shows field names.
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use netiso_common::{
    Direction, PUBLIC_IFACE_COUNTER_SLOTS, TrafficClass, TrafficCounters, public_iface_counter_slot,
};

/// What crossed the public interface, per direction and traffic class. Per-CPU, so the
/// hot path never contends on a shared cache line; the agent sums the CPUs.
#[btf_map]
pub static PUBLIC_IFACE_COUNTERS: PerCpuArray<
    TrafficCounters,
    { PUBLIC_IFACE_COUNTER_SLOTS as usize },
> = PerCpuArray::new();

/// Adds one packet of `bytes` bytes to the public interface's counters.
#[inline(always)]
pub fn count_public_iface(direction: Direction, class: TrafficClass, bytes: u32) {
    let slot = public_iface_counter_slot(direction, class);
    if let Some(counters) = PUBLIC_IFACE_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only written by the program running on this CPU,
        // and tc programs are not preempted by each other on one CPU.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(bytes);
        }
    }
}
