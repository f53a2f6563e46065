//! Network namespaces made by a test, deleted when dropped (also while unwinding from a
//! panic), and ways to run code and commands inside them.
use std::{
    fs::File,
    io,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    thread,
};

use nix::sched::{CloneFlags, setns};

/// A named network namespace under `/run/netns`, removed on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Whether dropping this handle deletes the namespace.
    owned: bool,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    pub fn create(name: &str) -> Self {
        run_checked(Command::new("ip").args(["netns", "add", name]));
        let netns = Self {
            name: name.to_owned(),
            owned: true,
        };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// A handle on a namespace made by someone else (such as the code under test);
    /// dropping it leaves the namespace alone.
    pub fn existing(name: &str) -> Self {
        assert!(
            std::path::Path::new("/run/netns").join(name).exists(),
            "no network namespace {name}"
        );
        Self {
            name: name.to_owned(),
            owned: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, usable with `setns` and `nsenter --net`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS…`, panicking with ip's message if it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs with this network namespace (and nothing else changed: the
    /// mount namespace stays the host's, so pinned BPF objects are visible).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ns_file = File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        let mut command = Command::new(program);
        // SAFETY: setns is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                setns(&ns_file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        command
    }

    /// Runs a command in the namespace and returns its output; panics if it fails.
    pub fn exec(&self, argv: &[&str]) -> Output {
        run_checked(self.command(argv[0]).args(&argv[1..]))
    }

    /// Starts a command in the namespace; it is killed when the guard drops.
    pub fn spawn(&self, argv: &[&str]) -> ChildGuard {
        let child = self
            .command(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?} in {}: {e}", self.name));
        ChildGuard { child: Some(child) }
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it opens live
    /// there. The calling thread's namespace is untouched.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = self.path();
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    let ns_file = File::open(&path)
                        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                    setns(&ns_file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Deleting the namespace also deletes the veth ends inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already taken")
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child already taken").id()
    }

    /// Waits for the process to exit by itself and returns its output.
    pub fn wait_with_output(mut self) -> Output {
        let child = self.child.take().expect("child already taken");
        child.wait_with_output().expect("waiting for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` to completion with `stdin` as its standard input, capturing its
/// output (whatever its status).
pub fn output_with_stdin(command: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    // Closed once written, so the command sees the end of its input.
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin).expect("writing the command's input");
    drop(input);
    child.wait_with_output().expect("waiting for the command")
}

/// Runs a command to completion, panicking with its stderr if it fails.
pub fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}
