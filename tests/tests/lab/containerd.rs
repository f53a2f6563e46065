//! containerd 1.6's `ctr run --cni` as the second real CNI client. ctr reads the first
//! network configuration in `/etc/cni/net.d` and plugins from `/opt/cni/bin` (fixed
//! paths): the test puts its files there, named to sort first, and removes what it
//! put. The daemon is private (its own configuration, root, state and socket); the
//! container's root file system is a directory (`--rootfs`), so no image is involved.
//! ctr sends no ports and no arguments: the container serves on the first port of its
//! ephemeral range, which it reads from its own `ip_local_port_range`.
use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use netiso_tests::{
    agent::{Agent, netiso_bin},
    lab::{HOST_IPV4, Lab},
    leaks::assert_holds_only_live_containers,
    netns::ChildGuard,
    wait::wait_until,
};
use serde_json::json;

use super::podman::{attachments, busybox_rootfs, page, text};

const CONFLIST: &str = "/etc/cni/net.d/00-netiso-lab-test.conflist";
const PLUGIN: &str = "/opt/cni/bin/netiso";

/// Files the test put in fixed places, removed on drop (also after a panic).
struct PlacedFiles(Vec<PathBuf>);

impl PlacedFiles {
    fn place(&mut self, path: &str, write: impl FnOnce(&Path)) {
        let path = PathBuf::from(path);
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "{} exists; the test will not replace it",
            path.display()
        );
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write(&path);
        self.0.push(path);
    }
}

impl Drop for PlacedFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

struct Containerd {
    dir: tempfile::TempDir,
    _daemon: ChildGuard,
}

impl Containerd {
    fn start(lab: &Lab) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("netiso-containerd-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        fs::write(
            root.join("config.toml"),
            format!(
                "version = 2\n\
                 root = \"{root}/root\"\n\
                 state = \"{root}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n\
                 address = \"{root}/containerd.sock\"\n",
                root = root.display()
            ),
        )
        .unwrap();
        let daemon = lab.host.spawn(&[
            "containerd",
            "--config",
            &root.join("config.toml").display().to_string(),
        ]);
        let socket = root.join("containerd.sock");
        wait_until("containerd's socket", Duration::from_secs(20), || {
            socket.exists()
        });
        Self {
            dir,
            _daemon: daemon,
        }
    }

    fn socket(&self) -> String {
        self.dir
            .path()
            .join("containerd.sock")
            .display()
            .to_string()
    }
}

#[test]
fn ctr_run_with_cni_attaches_serves_and_detaches() {
    if netiso_tests::skipped_in_vm(
        "containerd is the host's; the datapath parts run in the VM elsewhere",
    ) {
        return;
    }
    let lab = Lab::new();
    let _agent = Agent::start(&lab, &[]);
    let mut placed = PlacedFiles(Vec::new());
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "netiso",
        "plugins": [{ "type": "netiso", "socket": lab.api_socket() }],
    });
    placed.place(CONFLIST, |path| {
        fs::write(path, conflist.to_string()).unwrap();
    });
    placed.place(PLUGIN, |path| {
        std::os::unix::fs::symlink(netiso_bin(), path).unwrap();
    });
    let containerd = Containerd::start(&lab);
    let rootfs = containerd.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let serve = "echo ctr-web > /www/index.html; \
                 port=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range); \
                 exec /bin/busybox httpd -f -p $port -h /www";
    let id = format!("web{}", lab.id.replace('-', ""));
    let run = lab.host.spawn(&[
        "ctr",
        "--address",
        &containerd.socket(),
        "run",
        "--rm",
        "--cni",
        "--rootfs",
        &rootfs.display().to_string(),
        &id,
        "/bin/sh",
        "-c",
        serve,
    ]);
    wait_until("the attachment", Duration::from_secs(30), || {
        attachments(&lab).len() == 1
    });
    let attachment = attachments(&lab).remove(0);
    assert_eq!(
        attachment["attachment"]["container_id"],
        format!("default-{id}")
    );
    assert_eq!(attachment["attachment"]["ifname"], "eth0");
    let port = attachment["ephemeral_ports"]["begin"].as_u64().unwrap() as u16;
    assert_eq!(page(&lab, IpAddr::V4(HOST_IPV4), port), "ctr-web");
    // Killing the task ends `ctr run`, which deletes the attachment (with an empty
    // CNI_NETNS) before removing the container.
    let killed = lab
        .host
        .command("ctr")
        .args([
            "--address",
            &containerd.socket(),
            "task",
            "kill",
            "-s",
            "KILL",
            &id,
        ])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    // `ctr run` exits with the task's status (killed); what matters is what it left.
    drop(run.wait_with_output());
    assert_eq!(attachments(&lab), Vec::<serde_json::Value>::new());
    assert_holds_only_live_containers(&lab, &json!([]), "after ctr run ended");
}
