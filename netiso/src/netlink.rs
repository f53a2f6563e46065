//! rtnetlink operations on links, addresses, routes and neighbours, in the network
//! namespace of the calling thread (see [`crate::netns::run_in`]).
use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
};

use anyhow::{Context as _, anyhow};
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressScope},
        link::{InfoData, InfoVeth, LinkAttribute},
        neighbour::NeighbourState,
    },
};

/// Runs `f` with an rtnetlink handle bound to the calling thread's network namespace.
/// Must not be called from inside an async runtime.
pub fn with_handle<F, Fut, R>(f: F) -> anyhow::Result<R>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = anyhow::Result<R>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a netlink runtime")?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        let connection = tokio::spawn(connection);
        let result = f(handle).await;
        connection.abort();
        result
    })
}

/// What the datapath needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// Looks up a link by name; `Ok(None)` if there is none.
pub async fn link_by_name(handle: &Handle, name: &str) -> anyhow::Result<Option<LinkInfo>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(message)) => {
            let mut info = LinkInfo {
                index: message.header.index,
                name: name.to_owned(),
                mac: [0; 6],
                mtu: 0,
            };
            for attribute in message.attributes {
                match attribute {
                    LinkAttribute::Address(mac) if mac.len() == 6 => {
                        info.mac.copy_from_slice(&mac);
                    }
                    LinkAttribute::Mtu(mtu) => info.mtu = mtu,
                    _ => {}
                }
            }
            Ok(Some(info))
        }
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(error) => Err(error).with_context(|| format!("looking up link {name}")),
    }
}

/// Like [`link_by_name`], failing with a clear message when the link is missing.
pub async fn require_link(handle: &Handle, name: &str) -> anyhow::Result<LinkInfo> {
    link_by_name(handle, name)
        .await?
        .ok_or_else(|| anyhow!("interface {name} does not exist"))
}

/// The first IPv4 address and the first global IPv6 address of a link.
pub async fn link_addresses(
    handle: &Handle,
    index: u32,
) -> anyhow::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let (mut v4, mut v6) = (None, None);
    while let Some(message) = addresses.try_next().await.context("listing addresses")? {
        if message.header.scope != AddressScope::Universe {
            continue;
        }
        for attribute in message.attributes {
            match attribute {
                AddressAttribute::Address(IpAddr::V4(a)) if v4.is_none() => v4 = Some(a),
                AddressAttribute::Address(IpAddr::V6(a)) if v6.is_none() => v6 = Some(a),
                _ => {}
            }
        }
    }
    Ok((v4, v6))
}

/// One end of a veth pair to create.
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// Creates a veth pair whose `host` end is in this namespace and whose `peer` end is
/// created directly inside the namespace open at `peer_netns_fd`.
pub async fn create_veth(
    handle: &Handle,
    host: &VethEnd<'_>,
    peer: &VethEnd<'_>,
    peer_netns_fd: RawFd,
) -> anyhow::Result<()> {
    let peer_message = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.name.to_owned())
        .address(peer.mac.to_vec())
        .mtu(peer.mtu)
        .setns_by_fd(peer_netns_fd)
        .build();
    let message = LinkVeth::new(host.name, peer.name)
        .address(host.mac.to_vec())
        .mtu(host.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("creating veth pair {} / {}", host.name, peer.name))
}

/// Brings a link up.
pub async fn set_up(handle: &Handle, index: u32) -> anyhow::Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting link {index} up"))
}

/// Deletes a link; a missing one is not an error.
pub async fn delete_link(handle: &Handle, index: u32) -> anyhow::Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
        Err(error) => Err(error).with_context(|| format!("deleting link {index}")),
    }
}

/// Adds an address; IPv6 addresses skip duplicate address detection, since they are
/// the host's own and must be usable at once.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
) -> anyhow::Result<()> {
    let mut request = handle.address().add(index, address, prefix_len);
    if address.is_ipv6() {
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request
        .execute()
        .await
        .with_context(|| format!("adding address {address}/{prefix_len} to link {index}"))
}

/// Adds a permanent neighbour entry, so the kernel never resolves `address`.
pub async fn add_permanent_neighbour(
    handle: &Handle,
    index: u32,
    address: IpAddr,
    mac: [u8; 6],
) -> anyhow::Result<()> {
    handle
        .neighbours()
        .add(index, address)
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .execute()
        .await
        .with_context(|| format!("adding neighbour {address} on link {index}"))
}

/// Adds a default route through `gateway` on link `index`, on-link (no connected
/// subnet is needed to reach the gateway).
pub async fn add_default_route(handle: &Handle, index: u32, gateway: IpAddr) -> anyhow::Result<()> {
    let message = match gateway {
        IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gateway)
            .onlink()
            .build(),
        IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
            .output_interface(index)
            .gateway(gateway)
            .onlink()
            .build(),
    };
    handle
        .route()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("adding default route via {gateway}"))
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net/…`).
pub fn write_sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key} = {value}"))
}

/// Reads a sysctl of the calling thread's network namespace.
pub fn read_sysctl(key: &str) -> anyhow::Result<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {key}"))?
        .trim()
        .to_owned())
}

/// The name of the interface of the first main-table IPv4 default route, as Mesos's
/// `link::eth0()` picks it; `None` without a default route.
pub async fn default_route_interface(handle: &Handle) -> anyhow::Result<Option<String>> {
    use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader};
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes.try_next().await.context("listing routes")? {
        if route.header.destination_prefix_length != 0 {
            continue;
        }
        let main = route.header.table == RouteHeader::RT_TABLE_MAIN
            || route.attributes.contains(&RouteAttribute::Table(u32::from(
                RouteHeader::RT_TABLE_MAIN,
            )));
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        });
        if let (true, Some(index)) = (main, oif) {
            return link_name(handle, index).await.map(Some);
        }
    }
    Ok(None)
}

/// The name of the first loopback device, as Mesos's `link::lo()` picks it.
pub async fn loopback_interface(handle: &Handle) -> anyhow::Result<Option<String>> {
    use rtnetlink::packet_route::link::LinkFlags;
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.context("listing links")? {
        if link.header.flags.contains(LinkFlags::Loopback) {
            return link_name(handle, link.header.index).await.map(Some);
        }
    }
    Ok(None)
}

async fn link_name(handle: &Handle, index: u32) -> anyhow::Result<String> {
    let mut links = handle.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .context("looking up a link")?
        .with_context(|| format!("no link with index {index}"))?;
    link.attributes
        .into_iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name),
            _ => None,
        })
        .with_context(|| format!("link {index} has no name"))
}

/// Every link of the namespace.
pub async fn links(handle: &Handle) -> anyhow::Result<Vec<LinkInfo>> {
    let mut links = handle.link().get().execute();
    let mut all = Vec::new();
    while let Some(message) = links.try_next().await.context("listing links")? {
        let mut info = LinkInfo {
            index: message.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => info.name = name,
                LinkAttribute::Address(mac) if mac.len() == 6 => info.mac.copy_from_slice(&mac),
                LinkAttribute::Mtu(mtu) => info.mtu = mtu,
                _ => {}
            }
        }
        all.push(info);
    }
    Ok(all)
}

/// The link-layer address of the neighbour `address` on any link, if the namespace
/// has such an entry.
pub async fn neighbour_mac(handle: &Handle, address: IpAddr) -> anyhow::Result<Option<[u8; 6]>> {
    use rtnetlink::packet_route::neighbour::NeighbourAttribute;
    let mut neighbours = handle.neighbours().get().execute();
    while let Some(message) = neighbours.try_next().await.context("listing neighbours")? {
        let mut destination = None;
        let mut mac = None;
        for attribute in message.attributes {
            match attribute {
                NeighbourAttribute::Destination(d) => destination = Some(d),
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut m = [0; 6];
                    m.copy_from_slice(&l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        let matches = match (destination, address) {
            (
                Some(rtnetlink::packet_route::neighbour::NeighbourAddress::Inet(a)),
                IpAddr::V4(b),
            ) => a == b,
            (
                Some(rtnetlink::packet_route::neighbour::NeighbourAddress::Inet6(a)),
                IpAddr::V6(b),
            ) => a == b,
            _ => false,
        };
        if matches {
            return Ok(mac);
        }
    }
    Ok(None)
}

/// The id this namespace has for the network namespace open at `netns` (RTM_GETNSID),
/// or `None` if it has none. A veth's peer namespace always has one.
pub async fn nsid_of(handle: &Handle, netns: &std::fs::File) -> anyhow::Result<Option<i32>> {
    use std::os::fd::AsRawFd as _;

    use rtnetlink::{
        packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
        packet_route::{
            RouteNetlinkMessage,
            nsid::{NsidAttribute, NsidMessage},
        },
    };
    let mut message = NsidMessage::default();
    message
        .attributes
        .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(message));
    request.header.flags = NLM_F_REQUEST;
    let mut answers = handle.clone().request(request)?;
    while let Some(answer) = futures::StreamExt::next(&mut answers).await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(message)) = answer.payload
        {
            return Ok(message.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            }));
        }
    }
    Ok(None)
}

/// The id of the namespace that link `name`'s peer lives in, if it is elsewhere.
pub async fn peer_nsid(handle: &Handle, name: &str) -> anyhow::Result<Option<i32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    let Some(link) = links.try_next().await.context("looking up a link")? else {
        return Ok(None);
    };
    Ok(link.attributes.into_iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) => Some(id),
        _ => None,
    }))
}
