//! `netiso doctor` tells the truth about the kernel: each qdisc it reports matches
//! what iproute2's `tc` can create in a scratch namespace, and the attach mode matches
//! the kernel version.
use netiso_tests::{
    agent::{Agent, run_netiso},
    lab::Lab,
};

/// Whether `tc` can add a `kind` root qdisc on the loopback of the lab's remote.
fn tc_can_add(lab: &Lab, kind: &str) -> bool {
    let args: &[&str] = match kind {
        "htb" => &[
            "tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb",
        ],
        _ => &[
            "tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", kind,
        ],
    };
    let ok = lab
        .remote
        .command(args[0])
        .args(&args[1..])
        .output()
        .expect("running tc")
        .status
        .success();
    let _ = lab
        .remote
        .command("tc")
        .args(["qdisc", "del", "dev", "lo", "root"])
        .output();
    ok
}

#[test]
fn doctor_reports_what_the_kernel_really_has() {
    let lab = Lab::new();
    let (ok, stdout, stderr) = run_netiso(&lab.host, &["doctor"]);
    assert!(ok, "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
            .to_owned()
    };
    for kind in ["htb", "fq_codel"] {
        let expected = if tc_can_add(&lab, kind) {
            "ok"
        } else {
            "missing"
        };
        assert_eq!(
            line(kind).split_whitespace().next(),
            Some(expected),
            "{}",
            line(kind)
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap(), numbers.next().unwrap());
    let tcx = (major, minor) >= (6, 6);
    assert_eq!(line("tc").contains("tcx links"), tcx, "{}", line("tc"));
    assert!(line("root").starts_with("     ok"));
}

#[test]
fn the_agent_warns_once_about_each_missing_optional_feature() {
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let (stopped, log) = agent.stop_and_log();
    assert!(stopped);
    let expected = usize::from(!tc_can_add(&lab, "fq_codel"));
    assert_eq!(
        log.matches("fq_codel: not available").count(),
        expected,
        "{log}"
    );
}
