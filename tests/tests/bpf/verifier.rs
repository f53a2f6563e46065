//! Every program through this kernel's verifier, with the datapath's logging off (as
//! the agent loads it by default) and at debug (`--datapath-log=debug`), and told a
//! public MTU (as the agent tells it). The VM lanes run this where the other test-run
//! tests, whose verdicts no kernel changes, are left to the host.
use netiso_common::{EMPTY_CLASSIFIER_PROGRAM, PROBE_REDIRECT_PEER_PROGRAM};

use super::fixtures::*;

#[test]
fn every_program_passes_this_kernels_verifier_with_logging_off_and_at_debug() {
    static MTU: u32 = 1500;
    // The fixtures load every datapath program (the shared lo program where this
    // kernel's tc programs may read a namespace's cookie), panicking on a refusal.
    let _ = datapath_with_public_mtu(&MTU);
    let mut logging = datapath_logging(DatapathLogLevel::Debug);
    // And what the agent loads besides: its start-up probe, the benchmarks' baseline.
    netiso_tests::test_run::load_programs(
        &mut logging,
        &[PROBE_REDIRECT_PEER_PROGRAM, EMPTY_CLASSIFIER_PROGRAM],
    );
}
