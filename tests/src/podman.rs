//! podman 4.3 from Debian as a real CNI client, with everything of podman's private
//! to the test (its configuration through `CONTAINERS_CONF`, storage, run and
//! temporary directories, the network configuration directory and the plugin
//! directory) and an image imported from a busybox-static root file system, so no
//! registry is involved. podman runs in a given namespace, as on a host, and calls
//! the netiso plugin there, which asks the agent at a given control socket.
use std::{fs, path::Path, process::Output};

use serde_json::json;

use crate::netns::Netns;

pub const IMAGE: &str = "localhost/netiso-busybox:test";

/// podman with a private configuration, storage and network directory.
pub struct Podman<'a> {
    ns: &'a Netns,
    dir: tempfile::TempDir,
}

impl<'a> Podman<'a> {
    /// podman in `ns`, with a network `netiso` whose plugin is the binary `plugin`
    /// asking the agent at `api_socket`.
    pub fn new(ns: &'a Netns, api_socket: &Path, plugin: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("netiso-podman-")
            .tempdir()
            .expect("a scratch directory");
        let root = dir.path();
        for sub in [
            "bin",
            "net.d",
            "storage",
            "run",
            "tmp",
            "rootfs/bin",
            "rootfs/www",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        // The plugin is the netiso binary, named after its type.
        std::os::unix::fs::symlink(plugin, root.join("bin/netiso")).unwrap();
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "netiso",
            "plugins": [{
                "type": "netiso",
                "socket": api_socket,
                "capabilities": { "portMappings": true },
            }],
        });
        fs::write(root.join("net.d/netiso.conflist"), conflist.to_string()).unwrap();
        fs::write(
            root.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{net}\"\n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n",
                bin = root.join("bin").display(),
                net = root.join("net.d").display(),
            ),
        )
        .unwrap();
        let podman = Self { ns, dir };
        podman.import_image();
        podman
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// An image of a busybox-static root file system.
    fn import_image(&self) {
        let rootfs = self.root().join("rootfs");
        busybox_rootfs(&rootfs);
        let tar = self.root().join("rootfs.tar");
        let packed = std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(packed.success());
        let imported = self.podman(&["import", "-q", &tar.display().to_string(), IMAGE]);
        assert!(imported.status.success(), "{}", text(&imported.stderr));
    }

    /// Runs `podman ARGS…` in its namespace.
    pub fn podman(&self, args: &[&str]) -> Output {
        let root = self.root();
        let path = |sub: &str| root.join(sub).display().to_string();
        self.ns
            .command("podman")
            .env("CONTAINERS_CONF", root.join("containers.conf"))
            .args(["--root", &path("storage"), "--runroot", &path("run")])
            .args(["--tmpdir", &path("tmp")])
            .args(args)
            .output()
            .expect("running podman")
    }

    /// Runs `podman ARGS…`, which must succeed, and returns its output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.podman(args);
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout).trim().to_owned()
    }

    /// Starts `name` serving `page` over HTTP on `port` inside, published as given.
    pub fn serve(&self, name: &str, publish: &str, port: u16, page: &str) {
        let command = format!(
            "mkdir -p /www && echo {page} > /www/index.html && exec /bin/busybox httpd -f -p {port} -h /www"
        );
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "netiso",
            "-p",
            publish,
            IMAGE,
            "/bin/sh",
            "-c",
            &command,
        ]);
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        // podman's storage holds mounts under the scratch directory.
        let _ = self.podman(&["system", "reset", "-f"]);
    }
}

/// Makes `at` a root file system of busybox-static (`/bin/busybox`, `/bin/sh`, `/www`)
/// and the host's OpenBSD netcat with the libraries it loads (`/bin/nc`: busybox's
/// has no UDP).
pub fn busybox_rootfs(at: &Path) {
    for dir in ["bin", "www", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(at.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", at.join("bin/busybox")).expect("busybox-static is installed");
    std::os::unix::fs::symlink("busybox", at.join("bin/sh")).unwrap();
    let nc = Path::new("/usr/bin/nc.openbsd");
    fs::copy(nc, at.join("bin/nc")).expect("netcat-openbsd is installed");
    let ldd = std::process::Command::new("ldd").arg(nc).output().unwrap();
    for library in text(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let inside = at.join(library.trim_start_matches('/'));
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::copy(library, &inside).unwrap();
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
