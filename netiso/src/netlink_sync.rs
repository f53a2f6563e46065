//! Blocking netlink requests and dumps: link counters, qdiscs with their statistics
//! and TCP sockets for the statistics; qdiscs and classes for traffic control. A scrape
//! or a container's shaping makes a few requests from one thread, so a plain socket is
//! cheaper than an async runtime. A socket belongs to the network namespace of the
//! thread that opened it, and keeps it.
//!
//! Scrapes make a few requests per container, so the hot ones stay lean: answers are
//! received into one reused buffer, and links are read from the few attributes needed
//! (decoding every attribute of a link costs tens of microseconds).
use std::{fmt::Debug, io};

use anyhow::Context as _;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkSerializable, NlasIterator,
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

// Message and attribute types read or written by hand (uapi netlink.h, rtnetlink.h,
// if_link.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWSTATS: u16 = 92;
const RTM_GETSTATS: u16 = 94;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_STATS64: u16 = 23;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_STATS_LINK_64: u16 = 1;
/// `struct ifinfomsg`, before a link's attributes.
const IFINFOMSG_LEN: usize = 16;
/// `struct if_stats_msg`, before a stats message's attributes.
const IF_STATS_MSG_LEN: usize = 12;
/// The kernel sends dumps in pieces of at most 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A netlink socket that sends requests and dumps and collects their answers.
pub struct NetlinkSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl NetlinkSocket {
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
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Sends one message and returns the payloads of the answers of `answer_type`:
    /// all of them until the kernel is done for a dump, the first otherwise (or none
    /// with NLM_F_ACK, for which the acknowledgement ends the exchange). A refusal is
    /// an error with the kernel's errno.
    fn exchange(
        &mut self,
        message_type: u16,
        flags: u16,
        payload: &[u8],
        answer_type: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        self.sequence = self.sequence.wrapping_add(1);
        let length = NLMSG_HDRLEN + payload.len();
        let mut message = Vec::with_capacity(length);
        message.extend((length as u32).to_ne_bytes());
        message.extend(message_type.to_ne_bytes());
        message.extend((NLM_F_REQUEST | flags).to_ne_bytes());
        message.extend(self.sequence.to_ne_bytes());
        message.extend(0u32.to_ne_bytes());
        message.extend_from_slice(payload);
        self.socket.send(&message, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            if received > self.buffer.len() {
                return Err(invalid("a netlink answer larger than 64 KiB"));
            }
            let mut rest = &self.buffer[..received];
            while !rest.is_empty() {
                let answer = NetlinkBuffer::new_checked(rest)
                    .map_err(|e| invalid(&format!("a bad netlink answer: {e}")))?;
                let length = answer.length() as usize;
                if answer.sequence_number() == self.sequence {
                    match answer.message_type() {
                        NLMSG_DONE => return Ok(answers),
                        NLMSG_ERROR => {
                            let code = answer
                                .payload()
                                .get(..4)
                                .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                            return match code {
                                0 => Ok(answers),
                                code => Err(io::Error::from_raw_os_error(-code)),
                            };
                        }
                        t if t == answer_type => {
                            answers.push(answer.payload().to_vec());
                            if !dump && flags & NLM_F_ACK == 0 {
                                return Ok(answers);
                            }
                        }
                        _ => {}
                    }
                }
                rest = rest.get(netlink_align(length)..).unwrap_or_default();
            }
        }
    }

    /// Sends `request` (with `flags` besides NLM_F_REQUEST and NLM_F_ACK) and waits for
    /// the kernel's acknowledgement; a refusal is an error with the kernel's errno.
    pub fn request<M: NetlinkSerializable>(&mut self, request: M, flags: u16) -> io::Result<()> {
        let (message_type, payload) = serialize(&request);
        self.exchange(message_type, NLM_F_ACK | flags, &payload, 0)
            .map(drop)
    }

    /// Sends `request` as a dump and returns the answers of type `answer_type`.
    pub fn dump<M>(&mut self, request: M, answer_type: u16) -> anyhow::Result<Vec<M>>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        let (message_type, payload) = serialize(&request);
        let mut header = NetlinkHeader::default();
        header.message_type = answer_type;
        self.exchange(message_type, NLM_F_DUMP, &payload, answer_type)
            .context("netlink dump")?
            .iter()
            .map(|payload| {
                M::deserialize(&header, payload)
                    .map_err(|e| anyhow::anyhow!("decoding a netlink answer: {e}"))
            })
            .collect()
    }

    /// Every link of this namespace.
    pub fn links(&mut self) -> anyhow::Result<Vec<LinkSummary>> {
        self.link_dump(LinkMessage::default())
    }

    /// Every link of the namespace that this one knows as `nsid` (a container's, seen
    /// from the host), without entering it.
    pub fn links_in(&mut self, nsid: i32) -> anyhow::Result<Vec<LinkSummary>> {
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::IfNetnsId(nsid));
        self.link_dump(request)
    }

    fn link_dump(&mut self, request: LinkMessage) -> anyhow::Result<Vec<LinkSummary>> {
        let (message_type, payload) = serialize(&RouteNetlinkMessage::GetLink(request));
        Ok(self
            .exchange(message_type, NLM_F_DUMP, &payload, RTM_NEWLINK)
            .context("dumping links")?
            .iter()
            .filter_map(|payload| LinkSummary::parse(payload))
            .collect())
    }

    /// The 64-bit counters of link `ifindex` of this namespace (`RTM_GETSTATS` for
    /// them alone: far less for the kernel to write than a whole link).
    pub fn link_counters(&mut self, ifindex: u32) -> anyhow::Result<Stats64> {
        let mut request = [0u8; IF_STATS_MSG_LEN];
        request[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let filter = 1u32 << (IFLA_STATS_LINK_64 - 1);
        request[8..12].copy_from_slice(&filter.to_ne_bytes());
        let answers = self
            .exchange(RTM_GETSTATS, 0, &request, RTM_NEWSTATS)
            .with_context(|| format!("reading the counters of link {ifindex}"))?;
        let payload = answers.first().context("no counters in the answer")?;
        NlasIterator::new(payload.get(IF_STATS_MSG_LEN..).unwrap_or_default())
            .filter_map(Result::ok)
            .find(|nla| nla.kind() == IFLA_STATS_LINK_64)
            .and_then(|nla| Stats64::parse(nla.value()).ok())
            .context("no 64-bit counters in the answer")
    }

    /// Every qdisc of this namespace.
    pub fn qdiscs(&mut self) -> anyhow::Result<Vec<TcMessage>> {
        const RTM_NEWQDISC: u16 = 36;
        Ok(self
            .dump(
                RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
                RTM_NEWQDISC,
            )?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(qdisc) => Some(qdisc),
                _ => None,
            })
            .collect())
    }
}

fn serialize<M: NetlinkSerializable>(message: &M) -> (u16, Vec<u8>) {
    let mut payload = vec![0; message.buffer_len()];
    message.serialize(&mut payload);
    (message.message_type(), payload)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn netlink_align(length: usize) -> usize {
    (length.max(NLMSG_HDRLEN) + 3) & !3
}

/// What the statistics need of a link, from the few attributes concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    pub stats: Option<Stats64>,
    /// For a veth whose peer is in another namespace: that namespace's id here and
    /// the peer's ifindex there.
    pub peer: Option<(i32, u32)>,
}

impl LinkSummary {
    /// From an `RTM_NEWLINK` payload.
    fn parse(payload: &[u8]) -> Option<Self> {
        let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
        let mut link = Self {
            index,
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
                IFLA_STATS64 => link.stats = Stats64::parse(value).ok(),
                IFLA_LINK => peer_index = u32_value(),
                IFLA_LINK_NETNSID => nsid = u32_value().map(|v| v as i32),
                _ => {}
            }
        }
        link.peer = nsid.zip(peer_index);
        Some(link)
    }
}
