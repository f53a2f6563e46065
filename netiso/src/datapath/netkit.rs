//! Attaching the container program to a netkit pair: on its container end's transmit
//! path (`BPF_NETKIT_PEER`), named through the host end, which is in the agent's
//! namespace. aya 0.14 attaches tc programs to tcx and clsact only, so this is the
//! `bpf(2)` commands themselves.
//!
//! The attachment is the device's (`BPF_PROG_ATTACH`, no link): it stays when the
//! agent exits and goes with the pair, like a netlink filter, and a later agent
//! replaces the program atomically (`BPF_F_REPLACE`).
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::Context as _;
use aya::programs::SchedClassifier;

// uapi/linux/bpf.h
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_NETKIT_PEER: u32 = 55;
const BPF_F_REPLACE: u32 = 1 << 2;

/// `union bpf_attr` as BPF_PROG_ATTACH reads it.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

/// `union bpf_attr` as BPF_PROG_QUERY reads and writes it.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `union bpf_attr` as BPF_PROG_GET_FD_BY_ID reads it.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised `bpf_attr` prefix of the given size for
    // `command`; the kernel reads (and for queries writes) only within it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Ids of the programs on the container end of the netkit pair whose host end is
/// `primary` (none: an empty list).
pub fn peer_programs(primary: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 8];
    let mut attr = QueryAttr {
        target_ifindex: primary,
        attach_type: BPF_NETKIT_PEER,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(ids[..(attr.prog_cnt as usize).min(ids.len())].to_vec())
}

/// Puts `program` on the container end of the netkit pair whose host end is
/// `primary`, in place of the program there if any.
pub fn attach_peer(program: &SchedClassifier, primary: u32) -> anyhow::Result<()> {
    let fd = program
        .fd()
        .context("the container program is not loaded")?;
    let id = program
        .info()
        .context("reading the container program's id")?
        .id();
    let present = peer_programs(primary)
        .with_context(|| format!("listing the programs of netkit device {primary}"))?;
    let replaced = match present.as_slice() {
        [] => None,
        [present] if *present == id => return Ok(()),
        [present] => Some(program_fd(*present)?),
        more => anyhow::bail!(
            "netkit device {primary} has {} programs on its container end; netiso attaches one: delete the container and create it again",
            more.len()
        ),
    };
    let mut attr = AttachAttr {
        target_ifindex: primary,
        attach_bpf_fd: fd.as_fd().as_raw_fd() as u32,
        attach_type: BPF_NETKIT_PEER,
        ..Default::default()
    };
    if let Some(replaced) = &replaced {
        attr.attach_flags = BPF_F_REPLACE;
        attr.replace_bpf_fd = replaced.as_raw_fd() as u32;
    }
    bpf(BPF_PROG_ATTACH, &mut attr)
        .with_context(|| format!("attaching the container program to netkit device {primary}"))?;
    Ok(())
}

/// A descriptor of program `id`.
fn program_fd(id: u32) -> anyhow::Result<OwnedFd> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd =
        bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).with_context(|| format!("opening program {id}"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
