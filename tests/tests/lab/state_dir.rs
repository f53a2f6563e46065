//! The state directory going wrong: torn or garbage records, records of a newer
//! version, a full disk, a read-only directory. The agent starts, names the bad
//! record, keeps the rest, and a create it cannot record fails with nothing left.
use std::{fs, io::Write as _, path::PathBuf};

use netiso_tests::{
    agent::{Agent, cli, cli_status},
    lab::Lab,
    leaks::{Holdings, assert_holds_only_live_containers},
};

fn ids(list: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn bad_records_are_named_and_the_rest_recovered() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let agent = Agent::start(&lab, &[]);
    let [torn, newer, good] = ["torn", "newer", "good"].map(|n| lab.container_id(n));
    for (id, ports) in [(&torn, "31000"), (&newer, "31001"), (&good, "31002")] {
        assert!(cli(&lab, &["container", "create", id, "--ports", ports]).0);
    }
    agent.kill();
    let records = lab.state_dir().join("containers");
    let torn_record = records.join(format!("{torn}.json"));
    let text = fs::read_to_string(&torn_record).unwrap();
    fs::write(&torn_record, &text[..text.len() / 2]).unwrap();
    let newer_record = records.join(format!("{newer}.json"));
    let mut value: serde_json::Value =
        serde_json::from_slice(&fs::read(&newer_record).unwrap()).unwrap();
    value["version"] = 99.into();
    fs::write(&newer_record, value.to_string()).unwrap();

    let agent = Agent::start(&lab, &[]);
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(ids(&list), vec![good.clone()]);
    let (named, log) = agent.wait_for_log(&format!("{torn}.json is unreadable"));
    assert!(named, "the bad record is named: {log}");
    assert!(records.join(format!("{torn}.json.bad")).exists());
    assert!(
        log.contains("from a newer netiso") || agent.wait_for_log("from a newer netiso").0,
        "{log}"
    );
    assert!(newer_record.exists(), "a newer agent's record is kept");
    let veths = Holdings::of(&lab).veths;
    assert_eq!(
        veths.len(),
        2,
        "the newer agent's container is left alone: {veths:?}"
    );
}

/// A tmpfs of `size` mounted at `path`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", path.display());
        Self(path)
    }

    fn remount(&self, options: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_or_read_only_state_directory_refuses_creates_cleanly_and_keeps_containers() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let disk = SmallDisk::mount(lab.state_dir(), "256k");
    let agent = Agent::start(&lab, &[]);
    let a = lab.container_id("a");
    assert!(cli(&lab, &["container", "create", &a, "--ports", "31000"]).0);
    // Fill the disk.
    let filler = lab.state_dir().join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    while file.write_all(&[0; 4096]).is_ok() {}
    drop(file);
    let b = lab.container_id("b");
    let (code, stderr) = cli_status(&lab, &["container", "create", &b, "--ports", "31001"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is the state directory writable and not full?"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (_, list, _) = cli(&lab, &["container", "list"]);
    assert_holds_only_live_containers(&lab, &list, "after a create on a full disk");
    fs::remove_file(&filler).unwrap();
    assert!(cli(&lab, &["container", "create", &b, "--ports", "31001"]).0);

    // Read-only: creates fail cleanly; a restarted agent still recovers everything.
    disk.remount("ro");
    let c = lab.container_id("c");
    let (code, stderr) = cli_status(&lab, &["container", "create", &c]);
    assert_eq!(code, 1, "{stderr}");
    agent.kill();
    let agent = Agent::start(&lab, &[]);
    let (ok, list, _) = cli(&lab, &["container", "list"]);
    assert!(ok);
    assert_eq!(ids(&list), {
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        both
    });
    assert_holds_only_live_containers(&lab, &list, "after a restart on a read-only disk");
    drop(agent);
    disk.remount("rw");
}
