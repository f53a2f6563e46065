//! What a container's network is made of, and how it is built and torn down: a
//! network namespace per container (made, or adopted from a runtime) and a veth pair
//! into it. This is plumbing only; the container's lifecycle (ports, datapath entries,
//! shaping, records) is `crate::control::manager`'s. The container end is named like
//! the public interface (or as a CNI runtime asks) and carries the host's MAC, IPv4
//! and IPv6 addresses; its only route is a default route with the public interface's
//! MTU through a link-local gateway whose neighbour entry is permanent, so a container
//! never sends ARP or NDP.
use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    ContainerDevice, NetlinkSocket, PairEnd,
    host::{HostNetwork, allow_loopback_delivery},
    netns,
    sysctl::{self, SysctlChanges},
    veth_reaper::VethReaper,
};
use crate::{
    failpoints,
    failure::{Failure, refusal, refuse},
    ports::{PortMapping, PortRange},
};

/// MTU of both ends of a container's pair: the longest a device takes. Packets
/// between containers through the host's address, and from the host through its
/// loopback, are loopback-sized (64 KiB) and cross the pair whole; what a container
/// sends to the network is kept to the public MTU by its default route (and longer
/// frames are dropped by the datapath).
pub const PAIR_MTU: u32 = 65535;

/// Gateway a container routes through; answered by the host-side veth's MAC.
pub const CONTAINER_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const CONTAINER_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Prefix of the host-side veth names (`netiso<slot>`), as Mesos used `mesos<pid>`.
pub const HOST_VETH_PREFIX: &str = "netiso";
/// Prefix of the namespaces the agent creates (`/run/netns/netiso-<id>`).
pub const NETNS_PREFIX: &str = "netiso-";

/// What a container is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub id: String,
    /// An existing network namespace to adopt (a runtime's, such as
    /// `/proc/PID/ns/net`); `None` makes a new one.
    pub netns: Option<PathBuf>,
    /// Index into the datapath's per-container maps.
    pub slot: u32,
    /// The name of the container's end of the pair.
    pub interface: String,
    /// The kind of the pair.
    pub device: ContainerDevice,
    pub ephemeral: PortRange,
    pub ports: Vec<PortRange>,
    /// Host ports of `ports` that reach another port inside.
    pub port_mappings: Vec<PortMapping>,
}

/// A container's network as built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerNetwork {
    pub id: String,
    #[serde(skip)]
    pub slot: u32,
    pub netns: PathBuf,
    /// The host end of the container's pair (a veth or a netkit device).
    pub host_veth: String,
    /// The pair's kind.
    pub device: ContainerDevice,
    #[serde(skip)]
    pub host_veth_index: u32,
    #[serde(skip)]
    pub host_veth_mac: [u8; 6],
    /// ifindex of eth0 inside the container's namespace.
    #[serde(skip)]
    pub container_eth0_index: u32,
    pub ephemeral_ports: PortRange,
    pub ports: Vec<PortRange>,
    #[serde(skip)]
    pub port_mappings: Vec<PortMapping>,
    /// An adopted namespace's sysctls as they were before netiso changed them.
    #[serde(skip)]
    pub previous_sysctls: BTreeMap<String, String>,
    /// Whether the namespace is a runtime's, which outlives the container.
    #[serde(skip)]
    pub adopted: bool,
    /// The namespace's cookie, by which the shared loopback program knows it.
    #[serde(skip)]
    pub netns_cookie: u64,
}

/// The host-side veth name of datapath slot `slot`.
pub fn host_veth_name(slot: u32) -> String {
    format!("{HOST_VETH_PREFIX}{slot}")
}

/// Whether `name` is a host-side veth name netiso gives (`netiso<slot>`).
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix(HOST_VETH_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// A stable, locally administered MAC for the host-side veth of `slot` ("ni" prefix).
pub fn host_veth_mac(slot: u32) -> [u8; 6] {
    let [_, _, hi, lo] = slot.to_be_bytes();
    [0x02, 0x6e, 0x69, 0x00, hi, lo]
}

/// Refuses an interface name the kernel would not take (or `ip` could not name).
pub fn check_interface_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':'));
    if !valid {
        refuse!(
            Invalid,
            "interface name '{name}' is invalid: use 1 to 15 printable characters without '/', ':' or spaces"
        );
    }
    Ok(())
}

pub fn check_id(id: &str) -> anyhow::Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        refuse!(
            Invalid,
            "container id '{id}' is invalid: use 1 to 64 letters, digits, '-', '_' or '.'"
        );
    }
    Ok(())
}

/// Builds the container's namespace and veth pair. Runs in the host's namespace (the
/// calling thread's). On failure nothing is left behind: no veth, no namespace name,
/// and an adopted namespace's sysctls as they were.
pub fn create(host: &HostNetwork, spec: &ContainerSpec) -> anyhow::Result<ContainerNetwork> {
    check_id(&spec.id)?;
    let netns_name = format!("{NETNS_PREFIX}{}", spec.id);
    failpoints::hit("create.netns")?;
    let netns_path = match &spec.netns {
        Some(existing) => {
            let path = netns::name_existing(existing, &netns_name)?;
            let fits = netns::run_in(&path, || fits_adoption(&spec.interface))
                .and_then(|fits| fits)
                .with_context(|| format!("adopting {}", existing.display()));
            if let Err(error) = fits {
                let _ = destroy_namespace(&spec.id);
                return Err(error);
            }
            path
        }
        None => netns::create_named(&netns_name)?,
    };
    let built = build(host, spec, netns_path);
    if built.is_err() {
        let _ = destroy_namespace(&spec.id);
    }
    built
}

/// Refuses to adopt a namespace (the calling thread's) whose network is already set
/// up: netiso gives the container its interface and its only default route.
fn fits_adoption(eth0: &str) -> anyhow::Result<()> {
    let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
    if socket.link(eth0)?.is_some() {
        refuse!(
            Conflict,
            "the namespace already has an interface named {eth0}; netiso gives the container its own"
        );
    }
    if socket.default_route_ifindex()?.is_some() {
        refuse!(
            Conflict,
            "the namespace already has a default route; netiso gives the container its only route"
        );
    }
    Ok(())
}

/// Creates the veth pair into the namespace at `netns_path` and configures both ends;
/// on failure the pair is deleted again (which takes the container's end and what was
/// configured on it) and the namespace's sysctls are put back.
fn build(
    host: &HostNetwork,
    spec: &ContainerSpec,
    netns_path: PathBuf,
) -> anyhow::Result<ContainerNetwork> {
    let host_veth = host_veth_name(spec.slot);
    let host_veth_mac = host_veth_mac(spec.slot);
    let netns_file =
        File::open(&netns_path).with_context(|| format!("opening {}", netns_path.display()))?;
    let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
    failpoints::hit("create.veth")?;
    socket.create_pair(
        spec.device,
        &PairEnd {
            name: &host_veth,
            mac: host_veth_mac,
            mtu: PAIR_MTU,
        },
        &PairEnd {
            name: &spec.interface,
            mac: host.public.mac,
            mtu: PAIR_MTU,
        },
        &netns_file,
    )?;
    let configured = configure(host, spec, &mut socket, &host_veth, netns_path);
    if configured.is_err() {
        let _ = socket.delete_link_named(&host_veth);
    }
    configured
}

/// Configures both ends of a new veth pair.
fn configure(
    host: &HostNetwork,
    spec: &ContainerSpec,
    socket: &mut NetlinkSocket,
    host_veth: &str,
    netns_path: PathBuf,
) -> anyhow::Result<ContainerNetwork> {
    let host_veth_mac = host_veth_mac(spec.slot);
    let host_veth_index = socket.require_link(host_veth)?.index;
    // The host end is a bare attachment point for the datapath: without IPv6 it sends
    // no router solicitations or listener reports into the container, so the
    // container's link counters hold only its own traffic.
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        sysctl::write(&format!("net.ipv6.conf.{host_veth}.disable_ipv6"), "1")?;
    }
    socket.set_up(host_veth_index)?;
    failpoints::hit("create.inside")?;
    // An adopted namespace outlives the container: remember its sysctls to put back.
    let adopted = spec.netns.is_some();
    let (container_eth0_index, previous_sysctls, netns_cookie) =
        netns::run_in(&netns_path, || {
            let mut sysctls = SysctlChanges::new(adopted);
            let configured =
                configure_inside(host, spec, host_veth_mac, &mut sysctls).and_then(|index| {
                    Ok((
                        index,
                        netns::current_cookie().context("reading the namespace's cookie")?,
                    ))
                });
            let previous = sysctls.into_previous();
            match configured {
                Ok((index, cookie)) => Ok((index, previous, cookie)),
                Err(error) => {
                    let _ = sysctl::restore(&previous);
                    Err(error)
                }
            }
        })??;
    Ok(ContainerNetwork {
        id: spec.id.clone(),
        slot: spec.slot,
        netns: netns_path,
        host_veth: host_veth.to_owned(),
        device: spec.device,
        host_veth_index,
        host_veth_mac,
        container_eth0_index,
        ephemeral_ports: spec.ephemeral,
        ports: spec.ports.clone(),
        port_mappings: spec.port_mappings.clone(),
        previous_sysctls,
        adopted,
        netns_cookie,
    })
}

/// Configures the container's side, from inside its namespace.
/// Returns the ifindex of the container's eth0.
fn configure_inside(
    host: &HostNetwork,
    spec: &ContainerSpec,
    gateway_mac: [u8; 6],
    sysctls: &mut SysctlChanges,
) -> anyhow::Result<u32> {
    let eth0 = spec.interface.as_str();
    // Packets from the host and from other containers reach eth0 with the shared host
    // address as their source: accept them (IPv4 would take them for spoofed).
    // (eth0's own settings go with eth0; the namespace-wide ones are remembered.)
    sysctl::write(&format!("net.ipv4.conf.{eth0}.accept_local"), "1")?;
    sysctl::write(&format!("net.ipv4.conf.{eth0}.rp_filter"), "0")?;
    sysctls.set("net.ipv4.conf.all.rp_filter", "0")?;
    allow_loopback_delivery("lo", sysctls)?;
    // No link-local address of its own: it would equal the host's (same MAC), and the
    // container needs none, since its gateway's neighbour entry is permanent.
    sysctl::write(&format!("net.ipv6.conf.{eth0}.addr_gen_mode"), "1")?;
    sysctls.set(
        "net.ipv4.ip_local_port_range",
        &format!("{} {}", spec.ephemeral.begin, spec.ephemeral.end),
    )?;
    let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
    let lo = socket.require_link("lo")?;
    socket.set_up(lo.index)?;
    let link = socket.require_link(eth0)?;
    socket.set_up(link.index)?;
    failpoints::hit("create.addresses")?;
    for (address, prefix_len, gateway) in [
        (
            host.ipv4.map(IpAddr::V4),
            32,
            IpAddr::V4(CONTAINER_GATEWAY_V4),
        ),
        (
            host.ipv6.map(IpAddr::V6),
            128,
            IpAddr::V6(CONTAINER_GATEWAY_V6),
        ),
    ] {
        if let Some(address) = address {
            socket.add_address(link.index, address, prefix_len)?;
            socket.add_permanent_neighbour(link.index, gateway, gateway_mac)?;
            socket
                .add_default_route(link.index, gateway, host.public.mtu)
                .map_err(|error| {
                    let exists = error.chain().any(|cause| {
                        cause
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists)
                    });
                    if exists {
                        refusal(
                            Failure::Conflict,
                            format!("the namespace already has a default route ({error:#}); netiso gives the container its only route"),
                        )
                    } else {
                        error
                    }
                })?;
        }
    }
    Ok(link.index)
}

/// Removes the container's network. Idempotent. Runs in the host's namespace.
///
/// An adopted namespace outlives the container and its runtime may use it again at
/// once: its interface is set aside (down, renamed) and its sysctls put back before
/// this returns, and its pair goes to `reaper`. A
/// namespace the agent made loses its name, and its veth pair goes to `reaper`
/// (deleted in the background; the namespace goes with it).
pub fn destroy(container: &ContainerNetwork, reaper: &VethReaper) -> anyhow::Result<()> {
    if !container.adopted {
        failpoints::hit("destroy.netns")?;
        destroy_namespace(&container.id)?;
        failpoints::hit("destroy.veth")?;
        reaper.delete(container.slot, &container.host_veth);
        return Ok(());
    }
    failpoints::hit("destroy.veth")?;
    // The runtime may give its namespace a new interface of the same name at once,
    // and deleting the pair waits for RCU grace periods (~35 ms): the container's end
    // is taken down and renamed here, and the pair deleted in the background. A
    // namespace already gone took the container's end with it.
    let aside = !container.netns.exists()
        || netns::run_in(&container.netns, || {
            NetlinkSocket::route()
                .context("opening a netlink socket")?
                .set_aside(
                    container.container_eth0_index,
                    &set_aside_name(container.slot),
                )
        })?
        .inspect_err(|error| {
            log::warn!(
                "setting {}'s interface aside: {error:#}; deleting its pair now",
                container.id
            );
        })
        .is_ok();
    if aside {
        reaper.delete(container.slot, &container.host_veth);
    } else {
        NetlinkSocket::route()
            .context("opening a netlink socket")?
            .delete_link_named(&container.host_veth)?;
    }
    failpoints::hit("destroy.sysctls")?;
    if !container.previous_sysctls.is_empty() && container.netns.exists() {
        netns::run_in(&container.netns, || {
            sysctl::restore(&container.previous_sysctls)
        })?
        .context("putting back the adopted namespace's sysctls")?;
    }
    failpoints::hit("destroy.netns")?;
    destroy_namespace(&container.id)
}

/// The name an adopted namespace's interface takes while its pair waits to be
/// deleted (at most 15 characters: slots are below 4096).
fn set_aside_name(slot: u32) -> String {
    format!("netiso-gone{slot}")
}

/// Removes the name of container `id`'s namespace. A namespace the agent made goes
/// away with its veth pair; an adopted one lives on with its processes, and the veth
/// pair must be set aside first (see [`destroy`]).
pub fn destroy_namespace(id: &str) -> anyhow::Result<()> {
    netns::delete_named(&format!("{NETNS_PREFIX}{id}"))
}

/// Rebuilds the description of a container the agent made (or adopted) before it
/// restarted, from the kernel: its veth and its interface `eth0` must still be there.
pub fn recover(
    eth0: &str,
    id: &str,
    slot: u32,
    netns: &std::path::Path,
    host_veth: &str,
    adopted: bool,
) -> anyhow::Result<ContainerNetwork> {
    let veth = NetlinkSocket::route()
        .context("opening a netlink socket")?
        .link(host_veth)?
        .with_context(|| format!("its veth {host_veth} is gone"))?;
    let device = ContainerDevice::of_link_kind(&veth.kind).with_context(|| {
        format!(
            "its {host_veth} is a {} device, not a veth or netkit pair",
            veth.kind
        )
    })?;
    let (eth0_index, netns_cookie) = netns::run_in(netns, || -> anyhow::Result<(u32, u64)> {
        let index = NetlinkSocket::route()
            .context("opening a netlink socket")?
            .link(eth0)?
            .map(|l| l.index)
            .with_context(|| format!("its {eth0} is gone"))?;
        Ok((
            index,
            netns::current_cookie().context("reading the namespace's cookie")?,
        ))
    })??;
    Ok(ContainerNetwork {
        id: id.to_owned(),
        slot,
        netns: netns.to_owned(),
        host_veth: host_veth.to_owned(),
        device,
        host_veth_index: veth.index,
        host_veth_mac: veth.mac,
        container_eth0_index: eth0_index,
        ephemeral_ports: PortRange { begin: 0, end: 0 },
        ports: Vec::new(),
        port_mappings: Vec::new(),
        previous_sysctls: BTreeMap::new(),
        adopted,
        netns_cookie,
    })
}
