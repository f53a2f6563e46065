//! Test support for netiso: namespace labs with guaranteed teardown, processes that die
//! with the test, an agent launcher, and crafted packets for BPF test runs.
//!
//! Every address used here is from 198.18.0.0/15 or 2001:db8::/32, and every interface
//! lives in a namespace the test created; nothing touches the machine's own interfaces.
pub mod agent;
pub mod isolation;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod test_run;
pub mod wait;
