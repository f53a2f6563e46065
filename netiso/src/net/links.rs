//! Links: looking them up, their counters, veth and netkit pairs, and the ids namespaces have for
//! each other. All over [`NetlinkSocket`], in the socket's namespace.
use std::{fs::File, os::fd::AsRawFd as _};

use anyhow::{Context as _, anyhow};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NlasIterator};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        InfoData, InfoKind, InfoNetkit, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
        NetkitMode, NetkitPolicy, Stats64,
    },
    nsid::{NsidAttribute, NsidMessage},
    stats::{StatsAttribute, StatsFilterMask, StatsMessage},
};

use super::{ContainerDevice, netlink::NetlinkSocket};

// Answer types (uapi rtnetlink.h) and the link attributes read by hand (if_link.h).
const RTM_NEWLINK: u16 = 16;
const RTM_NEWNSID: u16 = 88;
const RTM_NEWSTATS: u16 = 92;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_STATS64: u16 = 23;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
/// `struct ifinfomsg`, before a link's attributes.
const IFINFOMSG_LEN: usize = 16;
const IFF_LOOPBACK: u32 = 0x8;

/// A link, as netiso needs it. Read from the few attributes concerned: decoding every
/// attribute of a link costs tens of microseconds, and scrapes read many links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub loopback: bool,
    pub stats: Option<Stats64>,
    /// For a veth whose peer is in another namespace: that namespace's id here and
    /// the peer's ifindex there.
    pub peer: Option<(i32, u32)>,
    /// The link's kind ("veth", "netkit"; empty for a device without one, like lo).
    pub kind: String,
}

impl Link {
    /// From an `RTM_NEWLINK` payload.
    fn parse(payload: &[u8]) -> Option<Self> {
        let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
        let flags = u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?);
        let mut link = Self {
            index,
            loopback: flags & IFF_LOOPBACK != 0,
            ..Default::default()
        };
        let (mut nsid, mut peer_index) = (None, None);
        for nla in NlasIterator::new(payload.get(IFINFOMSG_LEN..)?) {
            let nla = nla.ok()?;
            let value = nla.value();
            let u32_value = || Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?));
            match nla.kind() {
                IFLA_IFNAME => {
                    let name = value.split(|b| *b == 0).next().unwrap_or_default();
                    link.name = String::from_utf8_lossy(name).into_owned();
                }
                IFLA_ADDRESS if value.len() == 6 => link.mac.copy_from_slice(value),
                IFLA_MTU => link.mtu = u32_value().unwrap_or_default(),
                IFLA_STATS64 => link.stats = Stats64::parse(value).ok(),
                IFLA_LINK => peer_index = u32_value(),
                IFLA_LINK_NETNSID => nsid = u32_value().map(|v| v as i32),
                IFLA_LINKINFO => {
                    let kind = NlasIterator::new(value)
                        .flatten()
                        .find(|info| info.kind() == IFLA_INFO_KIND);
                    if let Some(kind) = kind {
                        let name = kind.value().split(|b| *b == 0).next().unwrap_or_default();
                        link.kind = String::from_utf8_lossy(name).into_owned();
                    }
                }
                _ => {}
            }
        }
        link.peer = nsid.zip(peer_index);
        Some(link)
    }
}

/// One end of a veth or netkit pair to create.
pub struct PairEnd<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub mtu: u32,
}

impl NetlinkSocket {
    /// Every link of this namespace.
    pub fn links(&mut self) -> anyhow::Result<Vec<Link>> {
        self.link_dump(LinkMessage::default())
    }

    /// Every link of the namespace that this one knows as `nsid` (a container's, seen
    /// from the host), without entering it.
    pub fn links_in(&mut self, nsid: i32) -> anyhow::Result<Vec<Link>> {
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::IfNetnsId(nsid));
        self.link_dump(request)
    }

    fn link_dump(&mut self, request: LinkMessage) -> anyhow::Result<Vec<Link>> {
        Ok(self
            .exchange(
                RouteNetlinkMessage::GetLink(request),
                NLM_F_DUMP,
                RTM_NEWLINK,
            )
            .context("dumping links")?
            .iter()
            .filter_map(|payload| Link::parse(payload))
            .collect())
    }

    /// The link called `name`; `None` if there is none.
    pub fn link(&mut self, name: &str) -> anyhow::Result<Option<Link>> {
        let mut request = LinkMessage::default();
        request
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        match self.exchange(RouteNetlinkMessage::GetLink(request), 0, RTM_NEWLINK) {
            Ok(answers) => Ok(answers.first().and_then(|payload| Link::parse(payload))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// Like [`Self::link`], failing with a clear message when the link is missing.
    pub fn require_link(&mut self, name: &str) -> anyhow::Result<Link> {
        self.link(name)?
            .ok_or_else(|| anyhow!("interface {name} does not exist"))
    }

    /// The link with ifindex `index`.
    pub fn link_by_index(&mut self, index: u32) -> anyhow::Result<Link> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        self.exchange(RouteNetlinkMessage::GetLink(request), 0, RTM_NEWLINK)
            .with_context(|| format!("looking up link {index}"))?
            .first()
            .and_then(|payload| Link::parse(payload))
            .with_context(|| format!("no link with index {index}"))
    }

    /// The first loopback device, as Mesos's `link::lo()` picks it.
    pub fn loopback(&mut self) -> anyhow::Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|link| link.loopback))
    }

    /// The 64-bit counters of link `ifindex` of this namespace (`RTM_GETSTATS` for
    /// them alone: far less for the kernel to write than a whole link).
    pub fn link_counters(&mut self, ifindex: u32) -> anyhow::Result<Stats64> {
        let mut request = StatsMessage::default();
        request.header.ifindex = ifindex;
        request.header.filter_mask = StatsFilterMask::Link64;
        let answer = self
            .get(RouteNetlinkMessage::GetStats(request), RTM_NEWSTATS)
            .with_context(|| format!("reading the counters of link {ifindex}"))?;
        let Some(RouteNetlinkMessage::NewStats(stats)) = answer else {
            anyhow::bail!("no counters in the answer for link {ifindex}");
        };
        stats
            .attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                StatsAttribute::Link64(counters) => Some(counters),
                _ => None,
            })
            .context("no 64-bit counters in the answer")
    }

    /// Creates a pair of devices of kind `kind` whose `host` end is in this namespace
    /// and whose `peer` end is created directly inside the namespace open at
    /// `peer_netns`. A netkit pair is made in layer-2 mode (Ethernet frames, as on a
    /// veth), and its container end drops what it sends until a program is attached
    /// to it (its default policy), so a container is never without its checks.
    pub fn create_pair(
        &mut self,
        kind: ContainerDevice,
        host: &PairEnd<'_>,
        peer: &PairEnd<'_>,
        peer_netns: &File,
    ) -> anyhow::Result<()> {
        let peer_message = peer_message(peer, peer_netns);
        let info = match kind {
            ContainerDevice::Veth => vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
            ],
            ContainerDevice::Netkit => vec![
                LinkInfo::Kind(InfoKind::Netkit),
                LinkInfo::Data(InfoData::Netkit(vec![
                    InfoNetkit::Peer(peer_message),
                    InfoNetkit::Mode(NetkitMode::L2),
                    InfoNetkit::Policy(NetkitPolicy::Pass),
                    InfoNetkit::PeerPolicy(NetkitPolicy::Drop),
                ])),
            ],
        };
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(host.name.to_owned()),
            LinkAttribute::Address(host.mac.to_vec()),
            LinkAttribute::Mtu(host.mtu),
            LinkAttribute::LinkInfo(info),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .with_context(|| format!("creating {kind} pair {} / {}", host.name, peer.name))
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: u32) -> anyhow::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .with_context(|| format!("setting link {index} up"))
    }

    /// Takes link `index` down and renames it `name`, out of the way of a new link of
    /// its old name while it waits to be deleted (a link is renamed only when down).
    pub fn set_aside(&mut self, index: u32, name: &str) -> anyhow::Result<()> {
        let mut down = LinkMessage::default();
        down.header.index = index;
        down.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(down), 0)
            .with_context(|| format!("setting link {index} down"))?;
        let mut rename = LinkMessage::default();
        rename.header.index = index;
        rename.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        self.request(RouteNetlinkMessage::SetLink(rename), 0)
            .with_context(|| format!("renaming link {index} to {name}"))
    }

    /// Deletes link `index`; a missing one is not an error.
    pub fn delete_link(&mut self, index: u32) -> anyhow::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(message), 0) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting link {index}")),
        }
    }

    /// Deletes the link called `name`, if there is one.
    pub fn delete_link_named(&mut self, name: &str) -> anyhow::Result<()> {
        match self.link(name)? {
            Some(link) => self.delete_link(link.index),
            None => Ok(()),
        }
    }

    /// The id this namespace has for the network namespace open at `netns`
    /// (RTM_GETNSID), or `None` if it has none. A veth's peer namespace always has one.
    pub fn nsid_of(&mut self, netns: &File) -> anyhow::Result<Option<i32>> {
        let mut request = NsidMessage::default();
        request
            .attributes
            .push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
        let answer = self
            .get(RouteNetlinkMessage::GetNsId(request), RTM_NEWNSID)
            .context("asking for a namespace id")?;
        Ok(match answer {
            Some(RouteNetlinkMessage::NewNsId(message)) => {
                message.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                })
            }
            _ => None,
        })
    }
}

/// The description of a pair's end in another namespace.
fn peer_message(peer: &PairEnd<'_>, netns: &File) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.attributes = vec![
        LinkAttribute::IfName(peer.name.to_owned()),
        LinkAttribute::Address(peer.mac.to_vec()),
        LinkAttribute::Mtu(peer.mtu),
        LinkAttribute::NetNsFd(netns.as_raw_fd()),
    ];
    message
}
