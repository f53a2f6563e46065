//! Running the real `netiso` binary in a lab namespace.
use std::{
    env,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
    sync::mpsc,
    thread,
    time::Duration,
};

use crate::{
    lab::{Lab, PUBLIC_IFACE},
    netns::{ChildGuard, Netns},
};

/// Path of the `netiso` binary: `$NETISO_BIN`, or the one cargo built next to the test.
pub fn netiso_bin() -> PathBuf {
    if let Some(path) = env::var_os("NETISO_BIN") {
        return PathBuf::from(path);
    }
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("netiso"))
        .expect("test executable has no target directory");
    assert!(
        path.exists(),
        "netiso binary not found at {}; build it with `cargo build -p netiso` or run `cargo xtask test`",
        path.display()
    );
    path
}

/// Runs `netiso ARGS…` in `ns` to completion and returns (success, stdout, stderr).
pub fn run_netiso(ns: &Netns, args: &[&str]) -> (bool, String, String) {
    run_binary(ns, &netiso_bin(), args)
}

/// Runs `binary ARGS…` (a netiso of another release) in `ns` to completion and
/// returns (success, stdout, stderr).
pub fn run_binary(ns: &Netns, binary: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = ns
        .command(binary)
        .args(args)
        .output()
        .expect("running netiso");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The device kind the tests ask the agent for, if `NETISO_TEST_CONTAINER_DEVICE`
/// (veth, netkit or auto) says; without it the agent's default, auto, decides.
pub fn container_device_override() -> Option<String> {
    std::env::var("NETISO_TEST_CONTAINER_DEVICE")
        .ok()
        .filter(|kind| !kind.is_empty())
}

/// The device kind containers made by the test library get: what the agent would
/// give them with the tests' `--container-device` (see
/// [`container_device_override`]) on this kernel.
pub fn container_device() -> netiso::net::ContainerDevice {
    use netiso::net::container_device::{ContainerDeviceChoice, probe_netkit};
    static KIND: std::sync::OnceLock<netiso::net::ContainerDevice> = std::sync::OnceLock::new();
    *KIND.get_or_init(|| {
        let choice = match container_device_override().as_deref() {
            None | Some("auto") => ContainerDeviceChoice::Auto,
            Some("veth") => ContainerDeviceChoice::Veth,
            Some("netkit") => ContainerDeviceChoice::Netkit,
            Some(other) => panic!("NETISO_TEST_CONTAINER_DEVICE={other}: use veth, netkit or auto"),
        };
        choice
            .resolve(probe_netkit())
            .expect("choosing the container device")
    })
}

/// Where a lab's agent serves HTTP: the agent's default `--listen`, inside the lab's
/// host namespace.
pub const AGENT_HTTP: &str = "127.0.0.1:5051";

/// [`AGENT_HTTP`] as an address.
pub fn agent_http() -> std::net::SocketAddr {
    AGENT_HTTP.parse().expect("AGENT_HTTP is an address")
}

/// The port layout of Mesos's tests: containers' ports in 31000-32000, ephemeral
/// ranges cut from 30001-30999 (the lab host keeps Linux's default 32768-60999).
pub const LAB_RESOURCES: &str = "ports:[31000-32000];ephemeral_ports:[30001-30999]";

/// How the agent's process is set up, beyond its namespace and arguments.
#[derive(Default)]
struct Launch {
    /// An open files limit (soft, hard).
    open_files: Option<(u64, u64)>,
    own_mount_namespace: bool,
    /// Another agent binary than [`netiso_bin`] (an older release's).
    binary: Option<PathBuf>,
}

/// A running agent, stopped (SIGKILL) when dropped.
pub struct Agent {
    process: ChildGuard,
    stderr: mpsc::Receiver<String>,
}

impl Agent {
    /// Starts `netiso agent` in the lab's host namespace on the public interface with the
    /// lab's pin directory, socket, state directory and resources, plus `extra_args`
    /// (which may bring other resources), and waits until it says it is ready.
    pub fn start(lab: &Lab, extra_args: &[&str]) -> Self {
        Self::start_with_env(lab, extra_args, &[])
    }

    /// [`Agent::start`] with environment variables (such as `NETISO_FAILPOINTS`).
    pub fn start_with_env(lab: &Lab, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let args = Self::lab_args(lab, extra_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(&lab.host, &args, env, Launch::default())
    }

    /// [`Agent::start`] in a mount namespace of its own whose mounts do not propagate
    /// back (slave), as systemd's sandboxing (`ProtectSystem=`) runs a service; told
    /// that the host's mount namespace is the test's (PID 1's may be unreadable here).
    pub fn start_in_own_mount_namespace(lab: &Lab, extra_args: &[&str]) -> Self {
        let host_mounts = format!("/proc/{}/ns/mnt", std::process::id());
        let mut extra = vec!["--host-mount-namespace", &host_mounts];
        extra.extend_from_slice(extra_args);
        let args = Self::lab_args(lab, &extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launch = Launch {
            own_mount_namespace: true,
            ..Launch::default()
        };
        Self::spawn(&lab.host, &args, &[], launch)
    }

    /// [`Agent::start`] with the agent binary `binary` (another release's).
    pub fn start_binary(lab: &Lab, binary: &std::path::Path, extra_args: &[&str]) -> Self {
        let args = Self::lab_args(lab, extra_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launch = Launch {
            binary: Some(binary.to_owned()),
            ..Launch::default()
        };
        Self::spawn(&lab.host, &args, &[], launch)
    }

    /// `netiso agent` on the lab's public interface with its pin directory, socket,
    /// state directory, resources and 16 ephemeral ports per container (unless
    /// `extra_args` bring their own), then `extra_args`.
    pub fn lab_args(lab: &Lab, extra_args: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--eth0-name".into(),
            PUBLIC_IFACE.into(),
            "--bpffs-root".into(),
            lab.pin_root().display().to_string(),
        ];
        if !extra_args.iter().any(|a| a.starts_with("--ephemeral")) {
            args.push("--ephemeral_ports_per_container=16".into());
        }
        if !extra_args.iter().any(|a| a.starts_with("--resources")) {
            args.extend(["--resources".into(), LAB_RESOURCES.into()]);
        }
        args.extend(lab.agent_paths());
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--container-device"))
            && let Some(kind) = container_device_override()
        {
            args.push(format!("--container-device={kind}"));
        }
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        args
    }

    /// Starts the agent with exactly `args` in `ns` and waits for its ready line.
    pub fn start_with_args(ns: &Netns, args: &[&str]) -> Self {
        Self::spawn(ns, args, &[], Launch::default())
    }

    /// [`Agent::start`] with an open files limit of `soft` (and `hard`), as a service
    /// manager may give it.
    pub fn start_with_open_files_limit(lab: &Lab, soft: u64, hard: u64) -> Self {
        let args = Self::lab_args(lab, &[]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launch = Launch {
            open_files: Some((soft, hard)),
            ..Launch::default()
        };
        Self::spawn(&lab.host, &args, &[], launch)
    }

    fn spawn(ns: &Netns, args: &[&str], env: &[(&str, &str)], launch: Launch) -> Self {
        let mut command = ns.command(launch.binary.clone().unwrap_or_else(netiso_bin));
        if launch.own_mount_namespace {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: unshare and mount are async-signal-safe; nothing else runs in
            // the child.
            unsafe {
                command.pre_exec(|| {
                    use nix::mount::{MsFlags, mount};
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                    mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_SLAVE | MsFlags::MS_REC,
                        None::<&str>,
                    )?;
                    Ok(())
                });
            }
        }
        if let Some((soft, hard)) = launch.open_files {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting netiso agent");
        let mut process = ChildGuard::new(child);
        let stdout = process.child_mut().stdout.take().expect("piped stdout");
        let stderr = process.child_mut().stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Drain both pipes for the agent's whole life so it never blocks on a write.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("netiso agent ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (stderr_tx, stderr_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = stderr_tx.send(line);
            }
        });
        let mut agent = Self {
            process,
            stderr: stderr_rx,
        };
        // Generous: the VM runs under software emulation, where a start (two object
        // loads with the kernel probe) can take tens of seconds on a loaded host.
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let status = agent.process.child_mut().try_wait().ok().flatten();
            panic!(
                "netiso agent did not become ready (exit status {status:?}); its log:\n{}",
                agent.log()
            );
        }
        agent
    }

    /// Waits (up to 30 seconds: the VM is slow) for the agent to write a line
    /// containing `text` to stderr; the lines read on the way are consumed. Returns
    /// whether it did, and what was read.
    pub fn wait_for_log(&self, text: &str) -> (bool, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut read = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    read.push(line);
                    if found {
                        return (true, read.join("\n"));
                    }
                }
                Err(_) => break,
            }
        }
        (false, read.join("\n"))
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// How many descriptors the agent has open.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("reading the agent's descriptors")
            .count()
    }

    /// Stops the agent with SIGTERM and waits for it to exit; returns whether it
    /// exited successfully.
    pub fn stop(mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.process
            .child_mut()
            .wait()
            .expect("waiting for the agent")
            .success()
    }

    /// Stops the agent with SIGTERM and returns whether it exited successfully and
    /// everything it logged.
    pub fn stop_and_log(mut self) -> (bool, String) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let ok = self
            .process
            .child_mut()
            .wait()
            .expect("waiting for the agent")
            .success();
        // The stderr reader ends with the process; collect what it read.
        let mut log = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            log.push(line);
        }
        (ok, log.join("\n"))
    }

    /// Waits (up to a minute) for the agent to exit on its own and returns its exit
    /// status and everything it logged.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.process.child_mut().try_wait().expect("waiting") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not exit; its log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        };
        let mut log = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            log.push(line);
        }
        (status, log.join("\n"))
    }

    /// Kills the agent with SIGKILL (no clean-up code runs) and reaps it.
    pub fn kill(mut self) {
        let child = self.process.child_mut();
        child.kill().expect("SIGKILL");
        child.wait().expect("reaping the agent");
    }
}

/// Runs `netiso ARGS… --api-socket <the lab's>` in the lab's host namespace and
/// returns (success, stdout as JSON or null, stderr).
pub fn cli(lab: &Lab, args: &[&str]) -> (bool, serde_json::Value, String) {
    let socket = lab.api_socket().display().to_string();
    let mut all = args.to_vec();
    all.extend(["--api-socket", &socket]);
    let (ok, stdout, stderr) = run_netiso(&lab.host, &all);
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (ok, json, stderr)
}

/// Runs `netiso ARGS… --api-socket <the lab's>` and returns its exit code and stderr.
pub fn cli_status(lab: &Lab, args: &[&str]) -> (i32, String) {
    let socket = lab.api_socket().display().to_string();
    let mut all = args.to_vec();
    all.extend(["--api-socket", &socket]);
    let output = lab
        .host
        .command(netiso_bin())
        .args(&all)
        .output()
        .expect("running netiso");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends `METHOD path` with `body` to the lab agent's control API over its Unix
/// socket and returns the answer (waiting at most 10 seconds; the server may answer,
/// as with 413, before it has read the whole body).
pub fn api_request(lab: &Lab, method: &str, path: &str, body: impl AsRef<[u8]>) -> HttpAnswer {
    use std::io::{Read as _, Write as _};
    let body = body.as_ref();
    let mut stream =
        std::os::unix::net::UnixStream::connect(lab.api_socket()).expect("connecting to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: netiso\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("sending request");
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    parse_http(&response)
}

fn parse_http(response: &str) -> HttpAnswer {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    HttpAnswer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// An HTTP answer: status, Content-Type, body.
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` from `ns` to the agent's HTTP server at `addr` (HTTP/1.0, so the server
/// closes the connection after answering).
pub fn http_get(ns: &Netns, addr: std::net::SocketAddr, path: &str) -> HttpAnswer {
    http_get_accepting(ns, addr, path, None)
}

/// [`http_get`] with an `Accept` header.
pub fn http_get_accepting(
    ns: &Netns,
    addr: std::net::SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> HttpAnswer {
    use std::io::{Read as _, Write as _};
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    ns.run(|| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the agent");
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n"
        )
        .expect("sending request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading response");
        parse_http(&response)
    })
}
