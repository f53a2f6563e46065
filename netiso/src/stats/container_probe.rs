//! What a scrape reads inside a container's namespace, through sockets and files
//! opened there once and kept: a socket or a `/proc/net` file stays bound to the
//! namespace it was opened in, so later scrapes read the container without entering
//! it (no `setns` per container per scrape).
use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::Path,
};

use anyhow::Context as _;
use netlink_packet_route::link::Stats64;
use nix::sched::{CloneFlags, setns};

use super::{SnmpStatistics, TrafficControlStatistics, qdisc, snmp, socket};
use crate::{config::StatisticsFlags, net::NetlinkSocket};

/// What is read inside a container.
pub struct Inside {
    pub eth0: Stats64,
    pub qdiscs: Vec<TrafficControlStatistics>,
    pub sockets: Option<socket::ConnectionCounts>,
    pub rtt: Option<socket::RttPercentiles>,
    pub snmp: Option<SnmpStatistics>,
}

/// Sockets and files open inside one container's namespace.
pub struct Probe {
    /// Inode of the namespace, to notice a new container under an old id.
    pub netns_inode: u64,
    /// The host end of the container's veth (host's namespace).
    pub veth_index: u32,
    /// The container's eth0 (its namespace).
    eth0_index: u32,
    route: NetlinkSocket,
    sock_diag: Option<NetlinkSocket>,
    sockstat: Option<(File, Option<File>)>,
    snmp: Option<File>,
}

/// The inode of the namespace file at `netns`.
pub fn netns_inode(netns: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(netns)?.ino())
}

impl Probe {
    /// Opens what `flags` need inside the namespace at `netns`, from a thread that is
    /// in the namespace `home` and returns there.
    pub fn open(
        netns: &Path,
        home: &File,
        flags: &StatisticsFlags,
        (veth_index, eth0_index): (u32, u32),
    ) -> anyhow::Result<Self> {
        let target = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let netns_inode = target.metadata()?.ino();
        setns(&target, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", netns.display()))?;
        let probe = Self::open_here(netns_inode, flags).map(|mut probe| {
            (probe.veth_index, probe.eth0_index) = (veth_index, eth0_index);
            probe
        });
        // A thread that cannot return must not go on: everything after would read the
        // wrong namespace.
        if let Err(error) = setns(home, CloneFlags::CLONE_NEWNET) {
            panic!("cannot return to the agent's network namespace: {error}");
        }
        probe
    }

    fn open_here(netns_inode: u64, flags: &StatisticsFlags) -> anyhow::Result<Self> {
        // `/proc/net` is the process's namespace; `/proc/thread-self/net` this thread's.
        let proc_net = |name: &str| File::open(format!("/proc/thread-self/net/{name}"));
        Ok(Self {
            netns_inode,
            veth_index: 0,
            eth0_index: 0,
            route: NetlinkSocket::route().context("opening a netlink socket")?,
            sock_diag: flags
                .socket_details
                .then(NetlinkSocket::sock_diag)
                .transpose()
                .context("opening a sock_diag socket")?,
            sockstat: flags
                .socket_summary
                .then(|| -> io::Result<_> {
                    // No sockstat6 without IPv6 in the kernel, and then no IPv6 socket.
                    Ok((proc_net("sockstat")?, proc_net("sockstat6").ok()))
                })
                .transpose()
                .context("opening /proc/net/sockstat")?,
            snmp: flags
                .snmp
                .then(|| proc_net("snmp"))
                .transpose()
                .context("opening /proc/net/snmp")?,
        })
    }

    /// Reads the container.
    pub fn read(&mut self) -> anyhow::Result<Inside> {
        let eth0 = self.route.link_counters(self.eth0_index)?;
        let qdiscs = qdisc::egress_statistics(&self.route.qdiscs()?, self.eth0_index);
        let sockets = match &self.sockstat {
            Some((v4, v6)) => Some(socket::tcp_connection_counts(
                &read_whole(v4)?,
                &v6.as_ref().map(read_whole).transpose()?.unwrap_or_default(),
            )?),
            None => None,
        };
        let rtt = match &mut self.sock_diag {
            Some(sock_diag) => socket::tcp_rtt_percentiles(sock_diag)?,
            None => None,
        };
        let snmp = self
            .snmp
            .as_ref()
            .map(|file| snmp::parse(&read_whole(file)?))
            .transpose()?;
        Ok(Inside {
            eth0,
            qdiscs,
            sockets,
            rtt,
            snmp,
        })
    }
}

/// Reads a `/proc` file from its start (the kernel makes its text anew each time).
/// The files read here are made in one go (`single_open`), so a read shorter than
/// the buffer is the whole text: asking again would only make the kernel make it
/// all again to say there is no more.
fn read_whole(file: &File) -> io::Result<String> {
    let mut text = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = file.read_at(&mut buffer, text.len() as u64)?;
        text.extend_from_slice(&buffer[..read]);
        if read < buffer.len() {
            return Ok(String::from_utf8_lossy(&text).into_owned());
        }
    }
}
