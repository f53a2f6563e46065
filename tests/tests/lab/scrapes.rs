//! Statistics scrapes under pressure: a low open files limit, containers that cannot
//! be probed, concurrent scrapes, destroyed containers' probes.
use netiso_tests::{
    agent::{Agent, agent_http, cli, http_get},
    lab::Lab,
};

fn create(lab: &Lab, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let id = lab.container_id(&format!("s{i}"));
            let (ok, _, stderr) = cli(lab, &["container", "create", &id]);
            assert!(ok, "{stderr}");
            id
        })
        .collect()
}

fn scraped(lab: &Lab) -> usize {
    let answer = http_get(&lab.host, agent_http(), "/monitor/statistics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json().as_array().unwrap().len()
}

/// The soft and hard limits on open files of process `pid`.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_open_files_limit_is_raised_and_containers_that_cannot_be_probed_are_counted() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start_with_open_files_limit(&lab, 64, 4096);
    assert_eq!(
        open_files_limit(agent.pid()),
        (4096, 4096),
        "soft raised to hard"
    );
    let ids = create(&lab, 6);
    assert_eq!(scraped(&lab), 6);
    let (ok, _, _) = cli(&lab, &["container", "destroy", &ids[0]]);
    assert!(ok);
    // Now a limit the agent cannot raise, just above what it holds: some containers'
    // probes cannot be opened.
    for id in &ids[1..] {
        let (ok, _, stderr) = cli(&lab, &["container", "destroy", id]);
        assert!(ok, "{stderr}");
    }
    let ids = create(&lab, 6);
    let room = u64::try_from(agent.open_files()).unwrap() + 3;
    let limit = libc::rlimit {
        rlim_cur: room,
        rlim_max: room,
    };
    let pid = i32::try_from(agent.pid()).unwrap();
    // SAFETY: plain system call on valid pointers.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let seen = scraped(&lab);
    assert!(seen < ids.len(), "some containers are left out ({seen})");
    let metrics = http_get(&lab.host, agent_http(), "/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let failures: Vec<&str> = metrics
        .body
        .lines()
        .filter(|l| l.starts_with("netiso_container_statistics_probe_failures_total{"))
        .collect();
    assert_eq!(failures.len(), ids.len() - seen, "{}", metrics.body);
    assert!(agent.wait_for_log("cannot be probed for statistics").0);
}

#[test]
fn concurrent_scrapes_are_complete_and_bounded_and_destroyed_containers_close_their_probes() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    // The first container loads the veth program once; count from after it.
    let warm = lab.container_id("warm");
    assert!(cli(&lab, &["container", "create", &warm]).0);
    assert!(cli(&lab, &["container", "destroy", &warm]).0);
    let before_any = agent.open_files();
    let ids = create(&lab, 12);
    assert_eq!(scraped(&lab), 12);
    let tasks = format!("/proc/{}/task", agent.pid());
    let threads = || std::fs::read_dir(&tasks).map_or(0, Iterator::count);
    let threads_idle = threads();
    let busiest = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                busiest.fetch_max(threads(), std::sync::atomic::Ordering::Relaxed);
                std::thread::yield_now();
            }
        });
        let scrapes: Vec<_> = (0..16).map(|_| scope.spawn(|| scraped(&lab))).collect();
        // Joined before any assertion, so the sampler always stops.
        let seen: Vec<_> = scrapes
            .into_iter()
            .map(std::thread::ScopedJoinHandle::join)
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for seen in seen {
            assert_eq!(seen.ok(), Some(12), "every scrape sees every container");
        }
    });
    let busiest = busiest.into_inner();
    // One scrape at a time: its thread and at most four workers.
    assert!(
        busiest <= threads_idle + 5,
        "{busiest} threads while scraping, {threads_idle} idle"
    );
    for id in &ids {
        let (ok, _, stderr) = cli(&lab, &["container", "destroy", id]);
        assert!(ok, "{stderr}");
    }
    // (Give the server a moment to close the last connections.)
    let closed = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        agent.open_files() <= before_any
    });
    assert!(
        closed,
        "destroyed containers' probes are closed without another scrape: {} descriptors, {before_any} before",
        agent.open_files()
    );
}
