//! netiso's one netlink layer: a blocking socket that sends a request or a dump and
//! collects the answers. Messages are built and decoded with `netlink-packet-core`
//! and `netlink-packet-route`; the operations on links, addresses, routes and
//! neighbours are in [`super::links`] and [`super::routes`], qdiscs in `crate::tc`.
//!
//! Blocking on purpose: every caller makes a few requests from one thread (often one
//! that entered a container's namespace), so a plain socket is cheaper and simpler
//! than an async runtime. A socket belongs to the network namespace of the thread
//! that opened it, and keeps it.
use std::io;

use anyhow::Context as _;
use netlink_packet_core::{
    ErrorBuffer, ErrorMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Parseable as _,
};
use netlink_sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_ROUTE, NETLINK_SOCK_DIAG},
};

/// The kernel sends dumps in pieces of at most 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// Length of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// A netlink socket that sends requests and dumps and collects their answers.
pub struct NetlinkSocket {
    socket: Socket,
    sequence: u32,
}

thread_local! {
    /// One receive buffer per thread, for all of its sockets: the statistics keep
    /// sockets open in every container, which would otherwise hold 64 KiB each.
    static RECEIVE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; RECEIVE_BUFFER]);
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
        })
    }

    /// Sends `message` and returns the payloads of the answers of `answer_type`: all of
    /// them until the kernel is done for a dump, the first otherwise (or none with
    /// NLM_F_ACK, for which the acknowledgement ends the exchange). A refusal is an
    /// error with the kernel's errno. Payloads are returned raw so that hot callers can
    /// read just the attributes they need.
    pub(crate) fn exchange<M: NetlinkSerializable>(
        &mut self,
        message: M,
        flags: u16,
        answer_type: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(message),
        );
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.sequence;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let sequence = self.sequence;
        let socket = &self.socket;
        RECEIVE.with_borrow_mut(|buffer| {
            let mut answers = Vec::new();
            loop {
                let received = socket.recv(&mut &mut buffer[..], 0)?;
                if received > buffer.len() {
                    return Err(invalid("a netlink answer larger than 64 KiB"));
                }
                let mut rest = &buffer[..received];
                while !rest.is_empty() {
                    let answer = NetlinkBuffer::new_checked(rest)
                        .map_err(|e| invalid(&format!("a bad netlink answer: {e}")))?;
                    let length = answer.length() as usize;
                    if answer.sequence_number() == sequence {
                        match answer.message_type() {
                            NLMSG_DONE => return Ok(answers),
                            NLMSG_ERROR => {
                                let payload = answer.payload();
                                let error = ErrorBuffer::new_checked(&payload)
                                    .and_then(|buffer| ErrorMessage::parse(&buffer))
                                    .map_err(|e| invalid(&format!("a bad netlink error: {e}")))?;
                                return match error.code {
                                    None => Ok(answers),
                                    Some(_) => Err(error.to_io()),
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
        })
    }

    /// Sends `request` (with `flags` besides NLM_F_REQUEST and NLM_F_ACK) and waits for
    /// the kernel's acknowledgement; a refusal is an error with the kernel's errno.
    pub fn request<M: NetlinkSerializable>(&mut self, request: M, flags: u16) -> io::Result<()> {
        self.exchange(request, NLM_F_ACK | flags, 0).map(drop)
    }

    /// Sends `request` and decodes the one answer of type `answer_type`, if any.
    pub fn get<M>(&mut self, request: M, answer_type: u16) -> io::Result<Option<M>>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        self.exchange(request, 0, answer_type)?
            .first()
            .map(|payload| decode(payload, answer_type))
            .transpose()
    }

    /// Sends `request` as a dump and decodes the answers of type `answer_type`.
    pub fn dump<M>(&mut self, request: M, answer_type: u16) -> anyhow::Result<Vec<M>>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        self.exchange(request, NLM_F_DUMP, answer_type)
            .context("netlink dump")?
            .iter()
            .map(|payload| Ok(decode(payload, answer_type)?))
            .collect()
    }
}

fn decode<M: NetlinkDeserializable>(payload: &[u8], message_type: u16) -> io::Result<M> {
    let mut header = NetlinkHeader::default();
    header.message_type = message_type;
    M::deserialize(&header, payload)
        .map_err(|e| invalid(&format!("decoding a netlink answer: {e}")))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn netlink_align(length: usize) -> usize {
    (length.max(NLMSG_HDRLEN) + 3) & !3
}
