//! Container plumbing: a network namespace per container and a veth pair into it. The
//! container end is named like the public interface and carries the host's MAC, IPv4
//! and IPv6 addresses and MTU; its only route is a default route through a link-local
//! gateway whose neighbour entry is permanent, so a container never sends ARP or NDP.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    netlink::{self, LinkInfo, VethEnd},
    netns,
    ports::PortRange,
};

/// Gateway a container routes through; answered by the host-side veth's MAC.
pub const CONTAINER_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const CONTAINER_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Prefix of the host-side veth names (`netiso<slot>`), as Mesos used `mesos<pid>`.
pub const HOST_VETH_PREFIX: &str = "netiso";
/// Prefix of the namespaces the agent creates (`/run/netns/netiso-<id>`).
pub const NETNS_PREFIX: &str = "netiso-";

/// The host side of the network, read from the public interface at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNetwork {
    pub public: LinkInfo,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub lo_index: u32,
}

impl HostNetwork {
    /// Reads the public interface `name` and the loopback of the calling thread's
    /// namespace.
    pub fn discover(public_iface: &str) -> anyhow::Result<Self> {
        netlink::with_handle(|handle| async move {
            let public = netlink::link_by_name(&handle, public_iface)
                .await?
                .with_context(|| {
                    format!("interface {public_iface} does not exist in this network namespace; pass the public interface with --eth0-name (see `ip link`)")
                })?;
            let lo = netlink::require_link(&handle, "lo").await?;
            let (ipv4, ipv6) = netlink::link_addresses(&handle, public.index).await?;
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
            })
        })
    }
}

impl HostNetwork {
    /// Lets the host's loopback accept the packets containers send to host services
    /// (see [`allow_loopback_delivery`]). Changes two sysctls of the host's `lo`, as
    /// Mesos did.
    pub fn prepare_loopback(&self, lo: &str) -> anyhow::Result<()> {
        allow_loopback_delivery(lo)
    }
}

/// Packets the datapath redirects into a loopback device arrive without the route a
/// locally sent packet carries, so the kernel routes them as if they came from a wire:
/// 127.0.0.0/8 addresses need `route_localnet` and the shared host address as source
/// needs `accept_local`, or IPv4 drops them as martians.
fn allow_loopback_delivery(lo: &str) -> anyhow::Result<()> {
    netlink::write_sysctl(&format!("net.ipv4.conf.{lo}.route_localnet"), "1")?;
    netlink::write_sysctl(&format!("net.ipv4.conf.{lo}.accept_local"), "1")
}

/// What a container is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub id: String,
    /// An existing network namespace to adopt (a runtime's, such as
    /// `/proc/PID/ns/net`); `None` makes a new one.
    pub netns: Option<PathBuf>,
    /// Index into the datapath's per-container maps.
    pub slot: u32,
    pub ephemeral: PortRange,
    pub ports: Vec<PortRange>,
}

/// A container's network as built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerNetwork {
    pub id: String,
    #[serde(skip)]
    pub slot: u32,
    pub netns: PathBuf,
    pub host_veth: String,
    #[serde(skip)]
    pub host_veth_index: u32,
    #[serde(skip)]
    pub host_veth_mac: [u8; 6],
    /// ifindex of eth0 inside the container's namespace.
    #[serde(skip)]
    pub container_eth0_index: u32,
    pub ephemeral_ports: PortRange,
    pub ports: Vec<PortRange>,
}

/// A stable, locally administered MAC for the host-side veth of `slot` ("ni" prefix).
pub fn host_veth_mac(slot: u32) -> [u8; 6] {
    let [_, _, hi, lo] = slot.to_be_bytes();
    [0x02, 0x6e, 0x69, 0x00, hi, lo]
}

pub fn check_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        bail!("container id '{id}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Builds the container's namespace and veth pair. Runs in the host's namespace (the
/// calling thread's). On failure nothing is left behind.
pub fn create(host: &HostNetwork, spec: &ContainerSpec) -> anyhow::Result<ContainerNetwork> {
    check_id(&spec.id)?;
    let netns_name = format!("{NETNS_PREFIX}{}", spec.id);
    let netns_path = match &spec.netns {
        Some(existing) => netns::name_existing(existing, &netns_name)?,
        None => netns::create_named(&netns_name)?,
    };
    let built = build(host, spec, netns_path.clone());
    if built.is_err() {
        // The veth pair goes with the namespace that holds its peer.
        let _ = destroy_namespace(&spec.id);
    }
    built
}

fn build(
    host: &HostNetwork,
    spec: &ContainerSpec,
    netns_path: PathBuf,
) -> anyhow::Result<ContainerNetwork> {
    let host_veth = format!("{HOST_VETH_PREFIX}{}", spec.slot);
    let host_veth_mac = host_veth_mac(spec.slot);
    let netns_file =
        File::open(&netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    let host_veth_index = netlink::with_handle(|handle| {
        let host_veth = host_veth.clone();
        async move {
            netlink::create_veth(
                &handle,
                &VethEnd {
                    name: &host_veth,
                    mac: host_veth_mac,
                    mtu: host.public.mtu,
                },
                &VethEnd {
                    name: &host.public.name,
                    mac: host.public.mac,
                    mtu: host.public.mtu,
                },
                netns_file.as_raw_fd(),
            )
            .await?;
            let veth = netlink::require_link(&handle, &host_veth).await?;
            // The host end is a bare attachment point for the datapath: without IPv6
            // it sends no router solicitations or listener reports into the container,
            // so the container's link counters hold only its own traffic.
            let ipv6 = format!("net.ipv6.conf.{host_veth}.disable_ipv6");
            if std::path::Path::new("/proc/sys/net/ipv6").exists() {
                netlink::write_sysctl(&ipv6, "1")?;
            }
            netlink::set_up(&handle, veth.index).await?;
            Ok(veth.index)
        }
    })?;
    let container_eth0_index =
        netns::run_in(&netns_path, || configure_inside(host, spec, host_veth_mac))??;
    Ok(ContainerNetwork {
        id: spec.id.clone(),
        slot: spec.slot,
        netns: netns_path,
        host_veth,
        host_veth_index,
        host_veth_mac,
        container_eth0_index,
        ephemeral_ports: spec.ephemeral,
        ports: spec.ports.clone(),
    })
}

/// Configures the container's side, from inside its namespace.
/// Returns the ifindex of the container's eth0.
fn configure_inside(
    host: &HostNetwork,
    spec: &ContainerSpec,
    gateway_mac: [u8; 6],
) -> anyhow::Result<u32> {
    let eth0 = host.public.name.as_str();
    // Packets from the host and from other containers reach eth0 with the shared host
    // address as their source: accept them (IPv4 would take them for spoofed).
    netlink::write_sysctl(&format!("net.ipv4.conf.{eth0}.accept_local"), "1")?;
    netlink::write_sysctl(&format!("net.ipv4.conf.{eth0}.rp_filter"), "0")?;
    netlink::write_sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    allow_loopback_delivery("lo")?;
    // No link-local address of its own: it would equal the host's (same MAC), and the
    // container needs none, since its gateway's neighbour entry is permanent.
    netlink::write_sysctl(&format!("net.ipv6.conf.{eth0}.addr_gen_mode"), "1")?;
    netlink::write_sysctl(
        "net.ipv4.ip_local_port_range",
        &format!("{} {}", spec.ephemeral.begin, spec.ephemeral.end),
    )?;
    netlink::with_handle(|handle| async move {
        let lo = netlink::require_link(&handle, "lo").await?;
        netlink::set_up(&handle, lo.index).await?;
        let link = netlink::require_link(&handle, eth0).await?;
        netlink::set_up(&handle, link.index).await?;
        if let Some(ipv4) = host.ipv4 {
            netlink::add_address(&handle, link.index, IpAddr::V4(ipv4), 32).await?;
            let gateway = IpAddr::V4(CONTAINER_GATEWAY_V4);
            netlink::add_permanent_neighbour(&handle, link.index, gateway, gateway_mac).await?;
            netlink::add_default_route(&handle, link.index, gateway).await?;
        }
        if let Some(ipv6) = host.ipv6 {
            netlink::add_address(&handle, link.index, IpAddr::V6(ipv6), 128).await?;
            let gateway = IpAddr::V6(CONTAINER_GATEWAY_V6);
            netlink::add_permanent_neighbour(&handle, link.index, gateway, gateway_mac).await?;
            netlink::add_default_route(&handle, link.index, gateway).await?;
        }
        Ok(link.index)
    })
}

/// Removes the container's veth pair and namespace. Idempotent. Runs in the host's
/// namespace.
pub fn destroy(container: &ContainerNetwork) -> anyhow::Result<()> {
    netlink::with_handle(|handle| async move {
        if let Some(veth) = netlink::link_by_name(&handle, &container.host_veth).await? {
            netlink::delete_link(&handle, veth.index).await?;
        }
        Ok(())
    })?;
    destroy_namespace(&container.id)
}

/// Removes the name of container `id`'s namespace. A namespace the agent made goes
/// away with its veth pair; an adopted one lives on with its processes, and the veth
/// pair must be deleted first (see [`destroy`]).
pub fn destroy_namespace(id: &str) -> anyhow::Result<()> {
    netns::delete_named(&format!("{NETNS_PREFIX}{id}"))
}

/// Rebuilds the description of a container the agent made before it restarted, from
/// the kernel: its veth and its eth0 must still be there.
pub fn recover(
    host: &HostNetwork,
    id: &str,
    slot: u32,
    netns: &std::path::Path,
    host_veth: &str,
) -> anyhow::Result<ContainerNetwork> {
    let veth = netlink::with_handle(|handle| async move {
        netlink::link_by_name(&handle, host_veth)
            .await?
            .with_context(|| format!("its veth {host_veth} is gone"))
    })?;
    let eth0 = host.public.name.clone();
    let eth0_index = netns::run_in(netns, || {
        netlink::with_handle(|handle| async move {
            netlink::link_by_name(&handle, &eth0)
                .await?
                .map(|l| l.index)
                .with_context(|| format!("its {eth0} is gone"))
        })
    })??;
    Ok(ContainerNetwork {
        id: id.to_owned(),
        slot,
        netns: netns.to_owned(),
        host_veth: host_veth.to_owned(),
        host_veth_index: veth.index,
        host_veth_mac: veth.mac,
        container_eth0_index: eth0_index,
        ephemeral_ports: PortRange { begin: 0, end: 0 },
        ports: Vec::new(),
    })
}
