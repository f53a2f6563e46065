//! The CLI as a member of a shell pipeline.
use netiso_tests::{
    agent::{Agent, cli, netiso_bin},
    lab::Lab,
};

#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    for name in ["a", "b", "c"] {
        let (ok, _, stderr) = cli(&lab, &["container", "create", &lab.container_id(name)]);
        assert!(ok, "{stderr}");
    }
    // `true` leaves before the CLI has its answer: the CLI's write finds no reader.
    let pipeline = format!(
        "{} --api-socket {} container list | true",
        netiso_bin().display(),
        lab.api_socket().display()
    );
    let output = lab
        .host
        .command("bash")
        .args(["-o", "pipefail", "-c", &pipeline])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "{stderr}");
}
