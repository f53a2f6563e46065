//! Port translation, stateless (what the CNI portmap plugin did with iptables DNAT and
//! conntrack): a container may listen on a port (its container port) other than the
//! host port it owns and is published on. Packets for the host port get the container
//! port as destination on their way in (`deliver.rs`); packets from the container port
//! get the host port as source on their way out (`container_veth_ingress.rs`); ICMP
//! errors quoting such packets are translated likewise. Both lookups are O(1): an
//! array indexed by host port, and a hash of (slot, container port) consulted only
//! for source ports the container does not own.
use aya_ebpf::{bindings::BPF_F_MARK_MANGLED_0, programs::TcContext};
use netiso_common::ContainerPort;

use crate::{
    maps::{CONTAINER_PORT_TRANSLATIONS, PORT_TRANSLATIONS},
    packet::{self, Flow, IPPROTO_UDP},
};

/// `bpf_l4_csum_replace` flag: the replaced field is 2 bytes.
const CSUM_FIELD_2_BYTES: u64 = 2;
/// Offsets of the checksum in a UDP and a TCP header.
const UDP_CHECKSUM: usize = 6;
const TCP_CHECKSUM: usize = 16;

/// The port the owner of host port `host_port` listens on, where it differs.
#[inline(always)]
pub fn container_port(host_port: u16) -> Option<u16> {
    PORT_TRANSLATIONS
        .get(u32::from(host_port))
        .copied()
        .filter(|port| *port != 0)
}

/// The host port the port `port` of container `slot` is published on, if any.
#[inline(always)]
pub fn host_port(slot: u32, port: u16) -> Option<u16> {
    let key = ContainerPort {
        slot,
        port,
        _pad: 0,
    };
    // SAFETY: copied at once.
    unsafe { CONTAINER_PORT_TRANSLATIONS.get(key) }.copied()
}

/// How [`rewrite_field`] writes a field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Straight into the packet where it can ([`packet::write`]): on the common
    /// paths, ~40 ns less.
    InPlace,
    /// Through `bpf_skb_store_bytes`: on the full paths, where the bounds checks of
    /// writing in place multiply the states 5.10's verifier walks past its limit.
    Helper,
}

/// Rewrites the 16-bit field at `offset` from `from` to `to` (host order), fixing the
/// one's-complement checksum at `checksum_offset` (`flags` as for
/// `bpf_l4_csum_replace`). The checksum is fixed first and the field written second,
/// as the kernel's NAT does: a checksum the device completes stays consistent.
#[inline(always)]
pub fn rewrite_field(
    ctx: &TcContext,
    offset: usize,
    checksum_offset: usize,
    (from, to): (u16, u16),
    flags: u64,
    write: Write,
) -> Result<(), ()> {
    let (from, to) = (from.to_be(), to.to_be());
    ctx.l4_csum_replace(
        checksum_offset,
        u64::from(from),
        u64::from(to),
        CSUM_FIELD_2_BYTES | flags,
    )
    .map_err(drop)?;
    match write {
        Write::InPlace => packet::write(ctx, offset, &to),
        Write::Helper => ctx.store(offset, &to, 0).map_err(drop),
    }
}

/// Offset of the transport checksum of `flow` (TCP or UDP), and its flags: a UDP
/// checksum of 0 means "none" over IPv4 and must stay so.
#[inline(always)]
fn transport_checksum(flow: &Flow) -> (usize, u64) {
    if flow.protocol == IPPROTO_UDP {
        (
            flow.l4_offset + UDP_CHECKSUM,
            u64::from(BPF_F_MARK_MANGLED_0),
        )
    } else {
        (flow.l4_offset + TCP_CHECKSUM, 0)
    }
}

/// A TCP or UDP packet's destination port, to translate on delivery.
#[derive(Clone, Copy)]
pub struct Destination {
    l4_offset: usize,
    checksum: (usize, u64),
    port: u16,
    write: Write,
}

impl Destination {
    #[inline(always)]
    pub fn of(flow: &Flow, port: u16, write: Write) -> Self {
        Self {
            l4_offset: flow.l4_offset,
            checksum: transport_checksum(flow),
            port,
            write,
        }
    }
}

/// On delivery: a packet for a published host port gets its container port.
#[inline(always)]
pub fn to_container(ctx: &TcContext, destination: &Destination) -> Result<(), ()> {
    match container_port(destination.port) {
        Some(port) => rewrite_field(
            ctx,
            destination.l4_offset + 2,
            destination.checksum.0,
            (destination.port, port),
            destination.checksum.1,
            destination.write,
        ),
        None => Ok(()),
    }
}

/// A packet's destination port `from` becomes `to`.
#[inline(always)]
pub fn destination(ctx: &TcContext, flow: &Flow, from: u16, to: u16) -> Result<(), ()> {
    let (checksum, flags) = transport_checksum(flow);
    rewrite_field(
        ctx,
        flow.l4_offset + 2,
        checksum,
        (from, to),
        flags,
        Write::Helper,
    )
}

/// On the way out: a packet from container port `from` leaves from host port `to`.
#[inline(always)]
pub fn from_container(
    ctx: &TcContext,
    flow: &Flow,
    (from, to): (u16, u16),
    write: Write,
) -> Result<(), ()> {
    let (checksum, flags) = transport_checksum(flow);
    rewrite_field(ctx, flow.l4_offset, checksum, (from, to), flags, write)
}

/// A port quoted in an ICMP error (the error's checksum covers the quote): at
/// `offset`, in the error whose ICMP header is at `icmp_offset`. The quoted transport
/// checksum is left alone: it covers data the quote usually lacks, and no stack checks
/// it.
#[inline(always)]
pub fn quoted_port(
    ctx: &TcContext,
    icmp_offset: usize,
    offset: usize,
    from: u16,
    to: u16,
) -> Result<(), ()> {
    rewrite_field(ctx, offset, icmp_offset + 2, (from, to), 0, Write::Helper)
}
