//! netiso's tc programs. One module per attach point; maps and packet parsing are shared.
#![no_std]
// Atomic add on map values (BPF_XADD): `core` offers no atomic read-modify-write on
// this target, the intrinsic lowers to the instruction every kernel has.
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![no_main]

mod baseline;
mod container_checks;
mod container_eth0_ingress;
mod container_lo_egress;
mod container_veth_ingress;
mod datapath_log;
mod deliver;
mod drop_events;
mod echo;
mod egress_flow;
mod egress_policer;
mod host_lo_ingress;
mod icmp;
mod maps;
mod packet;
mod public_egress;
mod public_ingress;
mod redirect_peer_probe;
mod translate;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this only satisfies rustc.
    loop {}
}

// GPL-compatible so that every tc helper is available to the programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
