//! Blocking netlink dumps (links with their counters, qdiscs with their statistics,
//! TCP sockets) for the statistics. A scrape makes a few requests from one thread, so
//! a plain socket is cheaper than an async runtime. A socket belongs to the network
//! namespace of the thread that opened it, and keeps it.
use std::{fmt::Debug, io};

use anyhow::{Context as _, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, Stats64},
    tc::TcMessage,
};
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
};

/// A netlink socket that sends dump requests and collects every answer.
pub struct DumpSocket {
    socket: Socket,
    sequence: u32,
}

impl DumpSocket {
    /// An rtnetlink socket in the calling thread's network namespace.
    pub fn route() -> io::Result<Self> {
        Self::open(NETLINK_ROUTE)
    }

    /// A sock_diag socket in the calling thread's network namespace.
    pub fn sock_diag() -> io::Result<Self> {
        Self::open(NETLINK_SOCK_DIAG)
    }

    fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Sends `request` as a dump and returns the messages answered, until the kernel
    /// says it is done.
    pub fn dump<M>(&mut self, request: M) -> anyhow::Result<Vec<M>>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .context("sending a netlink dump request")?;
        let mut answers = Vec::new();
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .context("reading a netlink dump")?;
            let mut rest = &datagram[..];
            while !rest.is_empty() {
                let answer = NetlinkMessage::<M>::deserialize(rest)
                    .context("decoding a netlink dump answer")?;
                let length = answer.header.length as usize;
                if answer.header.sequence_number == self.sequence {
                    match answer.payload {
                        NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                        NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::Error(error) if error.code.is_some() => {
                            return Err(error.to_io()).context("netlink dump refused");
                        }
                        _ => {}
                    }
                }
                if length == 0 || length > rest.len() {
                    bail!("netlink answer with a bad length {length}");
                }
                rest = &rest[length..];
            }
        }
    }

    /// Every link of this namespace.
    pub fn links(&mut self) -> anyhow::Result<Vec<LinkMessage>> {
        Ok(self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .collect())
    }

    /// Every link of the namespace that this one knows as `nsid` (a container's, seen
    /// from the host), without entering it.
    pub fn links_in(&mut self, nsid: i32) -> anyhow::Result<Vec<LinkMessage>> {
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::IfNetnsId(nsid));
        Ok(self
            .dump(RouteNetlinkMessage::GetLink(request))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })
            .collect())
    }

    /// Every qdisc of this namespace.
    pub fn qdiscs(&mut self) -> anyhow::Result<Vec<TcMessage>> {
        Ok(self
            .dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(qdisc) => Some(qdisc),
                _ => None,
            })
            .collect())
    }
}

/// A link's name, if the message carries it.
pub fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// For a veth whose peer is in another namespace: that namespace's id here and the
/// peer's ifindex there.
pub fn veth_peer(link: &LinkMessage) -> Option<(i32, u32)> {
    let nsid = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) => Some(*id),
        _ => None,
    })?;
    let index = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(index) => Some(*index),
        _ => None,
    })?;
    Some((nsid, index))
}

/// A link's 64-bit counters, if the message carries them.
pub fn link_stats64(link: &LinkMessage) -> Option<&Stats64> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Stats64(stats) => Some(stats),
        _ => None,
    })
}
