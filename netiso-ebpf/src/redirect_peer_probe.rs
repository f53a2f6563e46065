//! Not part of the datapath: the agent attaches this for an instant at start, in two
//! private namespaces, to learn whether the kernel counts what `bpf_redirect_peer`
//! delivers in the receiving veth's counters (`netiso/src/datapath/redirect_peer_probe.rs`).
use aya_ebpf::{helpers::bpf_redirect_peer, macros::classifier, programs::TcContext};

/// The veth whose peer receives every packet; set at load time.
#[unsafe(no_mangle)]
static PROBE_PEER_IFINDEX: u32 = 0;

#[classifier]
pub fn probe_redirect_peer(_ctx: TcContext) -> i32 {
    // SAFETY: read_volatile keeps the compiler from folding the load-time constant;
    // the helper fails (the packet is dropped) for an ifindex that is not a veth.
    unsafe { bpf_redirect_peer(core::ptr::read_volatile(&PROBE_PEER_IFINDEX), 0) as i32 }
}
