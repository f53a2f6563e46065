//! The long soak: 10 000 create/destroy cycles (`NETISO_SOAK_CYCLES` to change) through
//! the control API of a release agent while the remote sends to a container that
//! stays; prints the latency of each operation (p50, p99), the agent's memory and
//! descriptors before and after, and checks that nothing leaked. Run with
//! `cargo xtask bench soak`.
use netiso_tests::{agent::Agent, lab::Lab, soak::soak};

fn main() {
    let cycles = std::env::var("NETISO_SOAK_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    println!("soak: {cycles} create/destroy cycles with traffic to another container");
    let report = soak(&lab, &agent, cycles, 1000);
    report.print();
    println!(
        "nothing leaked: veths, namespaces, mounts, records, port and veth map entries, pinned links"
    );
    agent.kill();
}
