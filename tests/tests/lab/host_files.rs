//! What the agent keeps on the host is root's alone: a pin directory someone else could
//! write in is refused (whoever can unpin netiso's links detaches its programs), and
//! the state directory and its records are private (they hold every container's
//! labels).
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown},
    path::Path,
};

use netiso_tests::{
    agent::{Agent, LAB_RESOURCES, cli, run_netiso},
    lab::{Lab, PUBLIC_IFACE},
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Starts an agent on the lab's pin root that is expected to refuse; its last line.
fn refusal(lab: &Lab) -> String {
    let pin_root = lab.pin_root().display().to_string();
    let (ok, _, stderr) = run_netiso(
        &lab.host,
        &[
            "agent",
            "--eth0-name",
            PUBLIC_IFACE,
            "--bpffs-root",
            &pin_root,
            "--resources",
            LAB_RESOURCES,
            "--ephemeral_ports_per_container=16",
            "--api-socket",
            &lab.api_socket().display().to_string(),
            "--state-dir",
            &lab.state_dir().display().to_string(),
        ],
    );
    assert!(!ok, "the agent started on an unsafe pin directory");
    stderr.trim().lines().last().unwrap_or_default().to_owned()
}

#[test]
fn a_pin_directory_others_could_write_in_is_refused() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    let pin_root = lab.pin_root();
    fs::create_dir(pin_root).unwrap();
    // Made by an unprivileged user before the agent ever ran.
    chown(pin_root, Some(65534), Some(65534)).unwrap();
    let line = refusal(&lab);
    assert_eq!(
        line,
        format!(
            "netiso: error: pin directory {0} belongs to uid 65534 with mode 755: others could unpin netiso's programs; remove it (`rm -r {0}`) or choose another --bpffs-root",
            pin_root.display()
        )
    );
    // Root's, but writable by everyone.
    chown(pin_root, Some(0), Some(0)).unwrap();
    fs::set_permissions(pin_root, fs::Permissions::from_mode(0o777)).unwrap();
    assert!(refusal(&lab).contains("with mode 777: others could unpin"));
    // Made by the agent itself: root's alone, and the agent runs.
    fs::remove_dir(pin_root).unwrap();
    let _agent = Agent::start(&lab, &[]);
    assert_eq!(mode(pin_root), 0o700);
}

#[test]
fn the_state_directory_and_records_are_private() {
    if netiso_tests::skipped_in_vm("agent logic, the same on every kernel: the host runs it") {
        return;
    }
    let lab = Lab::new();
    // A state directory someone left open is closed.
    fs::create_dir_all(lab.state_dir()).unwrap();
    fs::set_permissions(lab.state_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let _agent = Agent::start(&lab, &[]);
    let id = lab.container_id("private");
    let (ok, _, stderr) = cli(
        &lab,
        &["container", "create", &id, "--label", "team=secret"],
    );
    assert!(ok, "{stderr}");
    let containers = lab.state_dir().join("containers");
    assert_eq!(mode(&lab.state_dir()), 0o700);
    assert_eq!(mode(&containers), 0o700);
    assert_eq!(mode(&containers.join(format!("{id}.json"))), 0o600);
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &id]);
    assert!(ok, "{stderr}");
}

/// Under a service manager's sandbox (its own mount namespace, mounts not propagated
/// back to the host), the namespaces the agent names are still the host's: runtimes,
/// `ip netns` and the CNI plugin open them there.
#[test]
fn a_sandboxed_agent_names_namespaces_the_host_sees() {
    let lab = Lab::new();
    let _agent = Agent::start_in_own_mount_namespace(&lab, &[]);
    let web = lab.container_id("web");
    let (ok, _, stderr) = cli(
        &lab,
        &["container", "create", &web, "--ports", "31000-31009"],
    );
    assert!(ok, "{stderr}");
    let name = format!("netiso-{web}");
    let path = Path::new("/run/netns").join(&name);
    // The namespace itself, not the empty file it is mounted on in the agent's view.
    let kind = nix::sys::statfs::statfs(&path).unwrap().filesystem_type();
    assert_eq!(kind, nix::sys::statfs::NSFS_MAGIC, "{}", path.display());
    let link = std::process::Command::new("ip")
        .args(["netns", "exec", &name, "ip", "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(link.status.success(), "{link:?}");
    let container = netiso_tests::netns::Netns::existing(&name);
    assert!(super::lifecycle::reachable_from_remote(
        &lab, &container, 31005
    ));
    let (ok, _, stderr) = cli(&lab, &["container", "destroy", &web]);
    assert!(ok, "{stderr}");
    assert!(!path.exists(), "{} left behind", path.display());
}
