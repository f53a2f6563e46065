//! A short soak: create/destroy cycles through the control API with traffic flowing
//! to another container; nothing may leak. (`cargo xtask bench soak` runs 10 000.)
use netiso_tests::{agent::Agent, lab::Lab, soak::soak};

#[test]
fn create_destroy_cycles_under_traffic_leave_nothing_behind() {
    // The VM runs the same create and destroy paths in the other lifecycle tests.
    if netiso_tests::skipped_in_vm("hundreds of lifecycle operations are too slow under emulation")
    {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let report = soak(&lab, &agent, 100, 0);
    report.print();
    assert!(
        report.open_files.1 <= report.open_files.0 + 1,
        "descriptors {:?}",
        report.open_files
    );
    assert!(
        report.sent > 0 && report.received * 2 >= report.sent,
        "traffic to the steady container kept flowing: {} of {}",
        report.received,
        report.sent
    );
}
