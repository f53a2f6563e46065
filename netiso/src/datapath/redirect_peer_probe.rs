//! What the running kernel's `bpf_redirect_peer` does, probed once at start: whether
//! it counts the packets it delivers in the receiving veth's counters. Kernels before
//! the 2023 fix ("bpf: Fix dev's rx stats for bpf_redirect_peer traffic"; Debian 11's
//! 5.10 among them) do not, so a container's `net_rx_*` would miss what the datapath
//! hands it; there every delivery goes through the host end of the veth instead.
//!
//! The probe uses two namespaces of its own (`netiso-probe-<pid>-a` and `-b`, IPv6
//! off) joined by a veth pair, sends datagrams into the first one's loopback, whose
//! ingress redirects them to the peer in the second, and reads that peer's counter. Nothing of
//! the host's is touched, and both namespaces are deleted afterwards.
use std::{fs::File, net::UdpSocket, path::Path, thread, time::Duration};

use anyhow::Context as _;
use aya::{
    maps::MapType,
    programs::{SchedClassifier, TcAttachType},
};
use netiso_common::{PROBE_PEER_IFINDEX_GLOBAL, PROBE_REDIRECT_PEER_PROGRAM};

use super::{AttachMode, layout, object::EBPF_OBJECT};
use crate::net::{ContainerDevice, NetlinkSocket, PairEnd, netns, sysctl};

/// How the datapath hands packets to containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Straight into the container's eth0 (`bpf_redirect_peer`), except where a
    /// limit or the packet's origin needs the veth.
    Peer,
    /// Always out of the host end of the veth, whose crossing counts the packet.
    ThroughVeth,
}

/// Which delivery this kernel needs, probed; on a failed probe the one that is right
/// everywhere (through the veth), with a warning.
pub fn delivery_for_running_kernel() -> Delivery {
    match redirect_peer_counts_rx() {
        Ok(true) => Delivery::Peer,
        Ok(false) => {
            log::info!(
                "this kernel's bpf_redirect_peer does not count what it delivers in the veth's counters: containers receive through the host end of their veth"
            );
            Delivery::ThroughVeth
        }
        Err(error) => {
            log::warn!(
                "probing bpf_redirect_peer failed ({error:#}); containers receive through the host end of their veth"
            );
            Delivery::ThroughVeth
        }
    }
}

/// Datagrams the probe sends: all must be counted.
const PROBE_DATAGRAMS: u64 = 8;

/// Turns IPv6 off in the calling thread's namespace, for links made from now on.
fn without_ipv6() -> anyhow::Result<()> {
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        for scope in ["all", "default"] {
            sysctl::write(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "1")?;
        }
    }
    Ok(())
}

/// Whether `bpf_redirect_peer` counts what it delivers in the peer's rx counters.
pub fn redirect_peer_counts_rx() -> anyhow::Result<bool> {
    let names = ["a", "b"].map(|end| format!("netiso-probe-{}-{end}", std::process::id()));
    let probed = (|| {
        let a = netns::create_named(&names[0])?;
        let b = netns::create_named(&names[1])?;
        probe_in(&a, &b)
    })();
    for name in &names {
        let _ = netns::delete_named(name);
    }
    // Loading a whole object for the probe leaves some 20 MiB free in the heap
    // (measured); hand it back.
    crate::heap::trim();
    probed
}

fn probe_in(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let b_file = File::open(b).with_context(|| format!("opening {}", b.display()))?;
    netns::run_in(a, || -> anyhow::Result<bool> {
        // Without IPv6 the veth pair sends nothing of its own (no router
        // solicitations, listener reports or address checks) that the count could
        // take for the probe's datagrams.
        netns::run_in(b, without_ipv6)??;
        without_ipv6()?;
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        let end = |name, last| PairEnd {
            name,
            mac: [0x02, 0x6e, 0x69, 0xff, 0xff, last],
            mtu: 1500,
        };
        socket.create_pair(
            ContainerDevice::Veth,
            &end("probe0", 1),
            &end("probe1", 2),
            &b_file,
        )?;
        for name in ["lo", "probe0"] {
            let index = socket.require_link(name)?.index;
            socket.set_up(index)?;
        }
        let target = socket.require_link("probe0")?.index;
        let received = || {
            netns::run_in(b, || -> anyhow::Result<u64> {
                let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
                let link = socket.require_link("probe1")?;
                socket.set_up(link.index)?;
                Ok(link.stats.map_or(0, |s| s.rx_packets))
            })?
        };
        let before = received()?;
        let mut loader = super::loader(super::DatapathLogLevel::Off);
        // The probe program uses no map, but loading the object makes them all: one
        // entry each instead of megabytes to clear (ring buffers keep their size,
        // which must be whole pages).
        for map in layout::current_maps() {
            if map.kind != MapType::RingBuf {
                loader.map_max_entries(map.name, 1);
            }
        }
        let mut ebpf = loader
            .override_global(PROBE_PEER_IFINDEX_GLOBAL, &target, true)
            .load(EBPF_OBJECT)
            .context("loading the probe")?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROBE_REDIRECT_PEER_PROGRAM)
            .context("the probe program is missing from the eBPF object")?
            .try_into()?;
        program.load().context("loading the probe program")?;
        AttachMode::for_running_kernel().prepare_iface("lo")?;
        program
            .attach("lo", TcAttachType::Ingress)
            .context("attaching the probe to lo")?;
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the probe socket")?;
        for _ in 0..PROBE_DATAGRAMS {
            socket
                .send_to(b"netiso probe", "127.0.0.1:9")
                .context("sending the probe datagrams")?;
        }
        // The datagrams cross lo's backlog first.
        for _ in 0..50 {
            if received()? >= before + PROBE_DATAGRAMS {
                return Ok(true);
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(false)
    })?
}
