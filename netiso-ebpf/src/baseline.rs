//! Not part of the datapath: a classifier that does nothing, so that the datapath
//! benchmark can subtract what running any program costs under BPF_PROG_TEST_RUN
//! (`tests/benches/datapath.rs`).
use aya_ebpf::{bindings::TC_ACT_PIPE, macros::classifier, programs::TcContext};

#[classifier]
pub fn empty_classifier(_ctx: TcContext) -> i32 {
    TC_ACT_PIPE
}
