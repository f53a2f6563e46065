//! Waiting for a condition by polling it, instead of sleeping for a guessed time.
use std::{
    thread,
    time::{Duration, Instant},
};

/// Polls `condition` until it holds, panicking with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
