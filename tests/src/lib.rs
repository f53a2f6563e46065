//! Test support for netiso: namespace labs with guaranteed teardown, processes that die
//! with the test, an agent launcher, and crafted packets for BPF test runs.
//!
//! Every address used here is from 198.18.0.0/15 or 2001:db8::/32, and every interface
//! lives in a namespace the test created; nothing touches the machine's own interfaces.
pub mod agent;
pub mod cni;
pub mod isolation;
pub mod lab;
pub mod leaks;
pub mod netns;
pub mod packets;
pub mod podman;
pub mod soak;
pub mod statistics;
pub mod streams;
pub mod test_run;
pub mod wait;

/// Whether the test runs in the VM of `cargo xtask vm-test` (software emulation, a
/// few times slower than the host).
pub fn in_vm() -> bool {
    std::env::var_os("NETISO_IN_VM").is_some()
}

/// Whether the test runs in the VM; if so it says why it is skipped there. For tests
/// of what the second kernel does not change, which emulation would only make slow.
pub fn skipped_in_vm(why: &str) -> bool {
    let in_vm = in_vm();
    if in_vm {
        eprintln!("skipped in the VM: {why}");
    }
    in_vm
}
