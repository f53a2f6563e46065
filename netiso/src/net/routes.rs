//! Addresses, routes and neighbours, over [`NetlinkSocket`], in the socket's namespace.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
        RouteProtocol, RouteScope, RouteType,
    },
};

use super::netlink::NetlinkSocket;

// Answer types (uapi rtnetlink.h).
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl NetlinkSocket {
    /// The first IPv4 address and the first global IPv6 address of link `index`.
    pub fn link_addresses(
        &mut self,
        index: u32,
    ) -> anyhow::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let answers = self
            .dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                RTM_NEWADDR,
            )
            .context("listing addresses")?;
        let (mut v4, mut v6) = (None, None);
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(message) = answer else {
                continue;
            };
            if message.header.index != index || message.header.scope != AddressScope::Universe {
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

    /// Every address of every link of this namespace but link-local ones (which no
    /// container can reach anyway).
    pub fn all_addresses(&mut self) -> anyhow::Result<Vec<IpAddr>> {
        let answers = self
            .dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                RTM_NEWADDR,
            )
            .context("listing addresses")?;
        let mut addresses = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(message) = answer else {
                continue;
            };
            if message.header.scope == AddressScope::Link {
                continue;
            }
            for attribute in message.attributes {
                if let AddressAttribute::Address(address) = attribute {
                    addresses.push(address);
                }
            }
        }
        Ok(addresses)
    }

    /// Adds an address to link `index`. IPv6 addresses skip duplicate address
    /// detection: they are the host's own and must be usable at once.
    pub fn add_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> anyhow::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = family(address);
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message.attributes.push(AddressAttribute::Address(address));
        match address {
            IpAddr::V4(_) => message.attributes.push(AddressAttribute::Local(address)),
            IpAddr::V6(_) => message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad)),
        }
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("adding address {address}/{prefix_len} to link {index}"))
    }

    /// Adds a permanent neighbour entry on link `index`, so the kernel never
    /// resolves `address`.
    pub fn add_permanent_neighbour(
        &mut self,
        index: u32,
        address: IpAddr,
        mac: [u8; 6],
    ) -> anyhow::Result<()> {
        let mut message = NeighbourMessage::default();
        message.header.family = family(address);
        message.header.ifindex = index;
        message.header.state = NeighbourState::Permanent;
        message
            .attributes
            .push(NeighbourAttribute::Destination(match address {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("adding neighbour {address} on link {index}"))
    }

    /// Adds a default route through `gateway` on link `index`, on-link (no connected
    /// subnet is needed to reach the gateway).
    /// Adds a default route through `gateway` on device `index`, with packets at most
    /// `mtu` bytes long (the device itself may take longer ones).
    pub fn add_default_route(
        &mut self,
        index: u32,
        gateway: IpAddr,
        mtu: u32,
    ) -> anyhow::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(gateway);
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.header.flags.insert(RouteFlags::Onlink);
        message.attributes.push(RouteAttribute::Oif(index));
        message
            .attributes
            .push(RouteAttribute::Gateway(match gateway {
                IpAddr::V4(a) => RouteAddress::Inet(a),
                IpAddr::V6(a) => RouteAddress::Inet6(a),
            }));
        message
            .attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("adding default route via {gateway}"))
    }

    /// The ifindex of the first main-table IPv4 default route's interface, as Mesos's
    /// `link::eth0()` picks it; `None` without a default route.
    pub fn default_route_ifindex(&mut self) -> anyhow::Result<Option<u32>> {
        let mut request = RouteMessage::default();
        request.header.address_family = AddressFamily::Inet;
        let routes = self
            .dump(RouteNetlinkMessage::GetRoute(request), RTM_NEWROUTE)
            .context("listing routes")?;
        for route in routes {
            let RouteNetlinkMessage::NewRoute(route) = route else {
                continue;
            };
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
                return Ok(Some(index));
            }
        }
        Ok(None)
    }
}
