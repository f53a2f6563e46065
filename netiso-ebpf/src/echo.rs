//! ICMP echo conversations. Replies carry the identifier of the request they answer
//! and come from the address it went to, so (remote, identifier) names a conversation
//! (`ECHO_OWNERS`). Containers share the host's address, so their identifiers are
//! made their own, as their source ports are: a request leaves with an identifier from
//! the container's ephemeral range (translated, checksum fixed, if its socket chose
//! another), and its replies get the original back. The host's own requests are
//! remembered as the host's (`public_egress`), and a container never takes over a
//! conversation the host is having.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use netiso_common::{EchoConversation, EchoKey, HOST_ECHO_HOLD_NS, PortOwner};

use crate::{
    maps::{CONTAINER_ECHO_IDS, ECHO_OWNERS, port_owner},
    packet::Flow,
    translate::{Write, rewrite_field},
};

/// Offsets in an ICMP echo message.
const CHECKSUM: usize = 2;
const IDENTIFIER: usize = 4;

#[inline(always)]
fn key(remote: [u8; 16], id_wire: u16, ipv6: bool) -> EchoKey {
    EchoKey {
        remote,
        id: id_wire,
        ipv6: u8::from(ipv6),
        _pad: 0,
    }
}

/// Whether the host is having conversation `key` (a request within the hold time).
#[inline(always)]
fn held_by_host(key: EchoKey, now: u64) -> bool {
    // SAFETY: copied at once.
    match unsafe { ECHO_OWNERS.get(key) }.copied() {
        Some(conversation) => {
            conversation.owner.container == 0
                && now.wrapping_sub(conversation.last_request_ns) < HOST_ECHO_HOLD_NS
        }
        None => false,
    }
}

/// Rewrites the 16-bit field at `offset` from `from` to `to` (both as on the wire),
/// fixing the ICMP checksum at `checksum_offset`.
#[inline(always)]
fn rewrite_id(ctx: &TcContext, offset: usize, checksum_offset: usize, from: u16, to: u16) -> bool {
    let (from, to) = (u16::from_be(from), u16::from_be(to));
    rewrite_field(ctx, offset, checksum_offset, (from, to), 0, Write::Helper).is_ok()
}

/// Gives the echo request of `flow` (sent by container `owner` in `slot`) an
/// identifier the container owns and remembers the conversation. `false` if the
/// request must be dropped: every identifier it could take is the host's just now, or
/// the packet cannot be rewritten.
#[inline(always)]
pub fn container_request(ctx: &TcContext, flow: &Flow, owner: PortOwner, slot: u32) -> bool {
    let Ok(id_wire) = ctx.load::<u16>(flow.l4_offset + IDENTIFIER) else {
        return false;
    };
    let id = u16::from_be(id_wire);
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let range = CONTAINER_ECHO_IDS.get(slot).copied().unwrap_or_default();
    let mut candidate = id;
    if range.len != 0 && port_owner(id).and_then(|o| o.slot()) != Some(slot) {
        // Spread over the range; the remote's last byte keeps two conversations with
        // one identifier to different remotes apart.
        let spread = u32::from(id) ^ (u32::from(flow.dst[15]) << 8) ^ u32::from(flow.dst[3]);
        candidate = range.begin + (spread % u32::from(range.len)) as u16;
    }
    if held_by_host(key(flow.dst, candidate.to_be(), flow.ipv6), now) {
        if range.len == 0 {
            return false;
        }
        let offset = u32::from(candidate - range.begin) + u32::from(range.len) / 2;
        candidate = range.begin + (offset % u32::from(range.len)) as u16;
        if held_by_host(key(flow.dst, candidate.to_be(), flow.ipv6), now) {
            return false;
        }
    }
    let candidate_wire = candidate.to_be();
    if candidate != id
        && !rewrite_id(
            ctx,
            flow.l4_offset + IDENTIFIER,
            flow.l4_offset + CHECKSUM,
            id_wire,
            candidate_wire,
        )
    {
        return false;
    }
    let conversation = EchoConversation {
        owner,
        original_id: id_wire,
        _pad: [0; 6],
        last_request_ns: now,
    };
    // A full map forgets the least recently used conversation.
    let _ = ECHO_OWNERS.insert(key(flow.dst, candidate_wire, flow.ipv6), conversation, 0);
    true
}

/// Remembers the host's own echo request of `flow`.
#[inline(always)]
pub fn host_request(ctx: &TcContext, flow: &Flow) {
    let Ok(id_wire) = ctx.load::<u16>(flow.l4_offset + IDENTIFIER) else {
        return;
    };
    let conversation = EchoConversation {
        owner: PortOwner::default(),
        original_id: id_wire,
        _pad: [0; 6],
        // SAFETY: helper call.
        last_request_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = ECHO_OWNERS.insert(key(flow.dst, id_wire, flow.ipv6), conversation, 0);
}

/// The container a reply from `remote` with identifier `id_wire` (at `id_offset`)
/// answers, its original identifier put back; `None` for the host's and unknown
/// conversations.
#[inline(always)]
pub fn reply_owner(
    ctx: &TcContext,
    remote: [u8; 16],
    ipv6: bool,
    id_wire: u16,
    id_offset: usize,
    checksum_offset: usize,
) -> Option<PortOwner> {
    // SAFETY: copied at once.
    let conversation = unsafe { ECHO_OWNERS.get(key(remote, id_wire, ipv6)) }.copied()?;
    conversation.owner.slot()?;
    if conversation.original_id != id_wire
        && !rewrite_id(
            ctx,
            id_offset,
            checksum_offset,
            id_wire,
            conversation.original_id,
        )
    {
        return None;
    }
    Some(conversation.owner)
}

/// Offset of the identifier in the echo message at `l4_offset`.
#[inline(always)]
pub fn identifier_offset(l4_offset: usize) -> usize {
    l4_offset + IDENTIFIER
}

/// Offset of the checksum of the ICMP message at `l4_offset`.
#[inline(always)]
pub fn checksum_offset(l4_offset: usize) -> usize {
    l4_offset + CHECKSUM
}
