//! The host's side of the network: its public interface, the addresses containers
//! share, and its loopback.
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail};

use super::{ContainerDevice, Link, NetlinkSocket, sysctl::SysctlChanges};

/// The host side of the network, read from the public interface at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNetwork {
    pub public: Link,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub lo_index: u32,
    /// The kind of pair new containers get: veth until the agent chooses
    /// (`--container-device`).
    pub container_device: ContainerDevice,
}

impl HostNetwork {
    /// Reads the public interface `name` and the loopback of the calling thread's
    /// namespace.
    pub fn discover(public_iface: &str) -> anyhow::Result<Self> {
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        let public = socket.link(public_iface)?.with_context(|| {
            format!("interface {public_iface} does not exist in this network namespace; pass the public interface with --eth0-name (see `ip link`)")
        })?;
        let lo = socket.require_link("lo")?;
        let (ipv4, ipv6) = socket.link_addresses(public.index)?;
        if ipv4.is_none() && ipv6.is_none() {
            bail!(
                "public interface {public_iface} has no global IPv4 or IPv6 address for containers to share"
            );
        }
        Ok(Self {
            public,
            ipv4,
            ipv6,
            lo_index: lo.index,
            container_device: ContainerDevice::Veth,
        })
    }

    /// Lets the host's loopback accept the packets containers send to host services
    /// (see [`allow_loopback_delivery`]). Changes two sysctls of the host's `lo`, as
    /// Mesos did.
    pub fn prepare_loopback(&self, lo: &str) -> anyhow::Result<()> {
        allow_loopback_delivery(lo, &mut SysctlChanges::new(false))
    }
}

/// Packets the datapath redirects into a loopback device arrive without the route a
/// locally sent packet carries, so the kernel routes them as if they came from a wire:
/// 127.0.0.0/8 addresses need `route_localnet` and the shared host address as source
/// needs `accept_local`, or IPv4 drops them as martians. What arrives that way comes
/// from containers, so redirects are never taken from it.
pub(crate) fn allow_loopback_delivery(lo: &str, sysctls: &mut SysctlChanges) -> anyhow::Result<()> {
    sysctls.set(&format!("net.ipv4.conf.{lo}.route_localnet"), "1")?;
    sysctls.set(&format!("net.ipv4.conf.{lo}.accept_local"), "1")?;
    sysctls.set(&format!("net.ipv4.conf.{lo}.accept_redirects"), "0")?;
    let ipv6 = format!("net.ipv6.conf.{lo}.accept_redirects");
    if std::path::Path::new("/proc/sys")
        .join(ipv6.replace('.', "/"))
        .exists()
    {
        sysctls.set(&ipv6, "0")?;
    }
    Ok(())
}
