//! Network namespaces: creating named ones (as `ip netns add` does), and running code
//! inside one on a thread of its own, so the rest of the process stays where it is.
//! Names are bind mounts under `/run/netns`, made where the host sees them
//! ([`host_mounts`]).
use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    thread,
};

use anyhow::Context as _;
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

use super::host_mounts;
use crate::failure::refuse;

/// Where named namespaces are bind-mounted, as iproute2 expects.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the named namespace `name`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Runs `f` on a new thread that has entered the network namespace at `netns`. Sockets
/// opened in `f` (netlink included) belong to that namespace.
pub fn run_in<R: Send>(netns: &Path, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
    let file = File::open(netns)
        .with_context(|| format!("opening network namespace {}", netns.display()))?;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
    .map_err(|e: io::Error| anyhow::Error::new(e))
    .with_context(|| format!("entering network namespace {}", netns.display()))
}

/// The cookie of the calling thread's network namespace (what
/// `bpf_get_netns_cookie` returns there); 0 on kernels before 5.14, which have none.
pub fn current_cookie() -> io::Result<u64> {
    // Any socket tells its namespace's cookie; a Unix one needs no network at all.
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let result = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    match result {
        0 => Ok(cookie),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(0),
            e => Err(e),
        },
    }
}

/// Creates a new network namespace bind-mounted at `/run/netns/<name>`, so that
/// `ip netns exec <name> …` works. Fails if the name is taken.
pub fn create_named(name: &str) -> anyhow::Result<PathBuf> {
    // Set and put back in the caller's namespace: the new thread leaves it.
    let _own_tcp_table = OwnTcpTable::set();
    host_mounts::run(|| {
        bind_at_name(name, |target| {
            let target = target.to_owned();
            thread::spawn(move || -> io::Result<()> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                bind(Path::new("/proc/thread-self/ns/net"), &target)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
    .with_context(|| format!("creating network namespace {name}"))
}

/// Gives the namespaces made while it lives a TCP socket table of their own
/// (`net.ipv4.tcp_child_ehash_entries`, Linux 6.1+), instead of a share of the host's
/// (hundreds of thousands of buckets): walking a container's sockets for its
/// statistics then walks only its own. Puts the host's setting back when dropped.
struct OwnTcpTable(Option<String>);

const TCP_CHILD_EHASH_ENTRIES: &str = "net.ipv4.tcp_child_ehash_entries";
/// Buckets of a container's table (rounded to a power of two by the kernel anyway).
const CONTAINER_TCP_TABLE: &str = "1024";

impl OwnTcpTable {
    fn set() -> Self {
        let previous = super::sysctl::read(TCP_CHILD_EHASH_ENTRIES).ok();
        if previous.is_some() {
            let _ = super::sysctl::write(TCP_CHILD_EHASH_ENTRIES, CONTAINER_TCP_TABLE);
        }
        Self(previous)
    }
}

impl Drop for OwnTcpTable {
    fn drop(&mut self) {
        if let Some(previous) = &self.0 {
            let _ = super::sysctl::write(TCP_CHILD_EHASH_ENTRIES, previous);
        }
    }
}

/// Makes the file `/run/netns/<name>` (refusing a name that is taken) and lets
/// `mount_at` bind a namespace onto it; on failure the file is removed again.
fn bind_at_name(
    name: &str,
    mount_at: impl FnOnce(&Path) -> io::Result<()>,
) -> anyhow::Result<PathBuf> {
    prepare_run_dir()?;
    let path = named_path(name);
    // create_new: a namespace of that name already existing is an error, not a reuse.
    match File::options().write(true).create_new(true).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => refuse!(
            Conflict,
            "{} exists: a namespace of that name is in use; destroy its container or remove it",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    if let Err(error) = mount_at(&path) {
        let _ = fs::remove_file(&path);
        return Err(error)
            .with_context(|| format!("bind-mounting a namespace at {}", path.display()));
    }
    Ok(path)
}

fn bind(source: &Path, target: &Path) -> io::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Gives the existing network namespace at `source` (such as `/proc/PID/ns/net` or a
/// runtime's bind mount) the name `name`, by bind-mounting it at `/run/netns/<name>`.
pub fn name_existing(source: &Path, name: &str) -> anyhow::Result<PathBuf> {
    host_mounts::run(|| name_existing_here(source, name))
}

fn name_existing_here(source: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let kind = fs::read_link(source).ok();
    let is_netns = nix::sys::statfs::statfs(source)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    if !is_netns && !kind.is_some_and(|k| k.to_string_lossy().starts_with("net:")) {
        refuse!(
            Invalid,
            "{} is not a network namespace; pass a namespace file such as /run/netns/NAME or /proc/PID/ns/net",
            source.display()
        );
    }
    bind_at_name(name, |target| bind(source, target))
}

/// Unmounts and removes a named namespace. A missing one is not an error.
pub fn delete_named(name: &str) -> anyhow::Result<()> {
    host_mounts::run(|| delete_named_here(name))
}

fn delete_named_here(name: &str) -> anyhow::Result<()> {
    let path = named_path(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(error) => {
            return Err(error).with_context(|| format!("unmounting {}", path.display()));
        }
    }
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so that namespace bind
/// mounts made later propagate to every mount namespace.
fn prepare_run_dir() -> anyhow::Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).with_context(|| format!("creating {NETNS_RUN_DIR}"))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .is_ok()
    {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself first.
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {NETNS_RUN_DIR} onto itself"))?;
    mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .with_context(|| format!("making {NETNS_RUN_DIR} a shared mount"))
}
