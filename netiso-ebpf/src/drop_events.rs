//! Drop events for `netiso monitor`: each dropped packet described (whose, why, which
//! flow) into the `DROP_EVENTS` ring buffer. Off unless the agent has a listener (one
//! array lookup per drop then), and rate-limited per CPU, so that a flood of drops
//! costs a counter each, never the ring buffer's or the reader's time.
use aya_ebpf::{bindings::__sk_buff, helpers::bpf_ktime_get_ns, programs::TcContext};
use netiso_common::{DROP_EVENT_BURST, DROP_EVENTS_PER_SECOND, Direction, DropEvent, DropReason};

use crate::{
    maps::{DROP_EVENT_BUDGETS, DROP_EVENTS, DROP_EVENTS_SWITCH},
    packet::{
        IPPROTO_UDP, IPV6_FRAGMENT, MAX_IPV6_EXT_HEADERS, ipv6_extension_len, is_ipv6_extension,
    },
};

const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;

/// Credit one event costs.
const EVENT_COST_NS: u64 = 1_000_000_000 / DROP_EVENTS_PER_SECOND;

/// Reports that container `slot`'s packet in `ctx` was dropped for `reason`, if the
/// agent listens.
#[inline(always)]
pub fn report(ctx: &TcContext, slot: u32, direction: Direction, reason: DropReason) {
    if DROP_EVENTS_SWITCH.get(0).copied().unwrap_or(0) != 0 {
        emit(ctx.skb.skb, slot, direction as u8, reason as u8);
    }
}

/// A function of its own: the programs that drop stay as small as they were for the
/// verifier, and the work happens only while someone listens.
#[inline(never)]
fn emit(skb: *mut __sk_buff, slot: u32, direction: u8, reason: u8) {
    let ctx = TcContext::new(skb);
    let Some(budget) = DROP_EVENT_BUDGETS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot, only written by the program running on this CPU.
    let budget = unsafe { &mut *budget };
    // SAFETY: helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let credit = (budget.credit_ns + now.saturating_sub(budget.last_ns))
        .min(EVENT_COST_NS * DROP_EVENT_BURST);
    budget.last_ns = now;
    if credit < EVENT_COST_NS {
        budget.credit_ns = credit;
        budget.suppressed += 1;
        return;
    }
    budget.credit_ns = credit - EVENT_COST_NS;
    let Some(mut entry) = DROP_EVENTS.reserve(0) else {
        // The ring buffer is full: the reader is behind.
        budget.suppressed += 1;
        return;
    };
    // Written in place: the event on this function's stack would count against the
    // callers' (5.10's verifier allows 512 bytes for a whole chain of calls), and
    // field by field: zeroing it whole, or its addresses as arrays, becomes a call to
    // memset, one more frame.
    // SAFETY: the entry is a reserved, aligned DropEvent; every field is written
    // before it is read; the addresses start 8-aligned (at 24 and 40).
    let event = unsafe {
        let event = &mut *entry.as_mut_ptr();
        for address in [&raw mut event.src, &raw mut event.dst] {
            let words = address.cast::<u64>();
            core::ptr::write_volatile(words, 0);
            core::ptr::write_volatile(words.add(1), 0);
        }
        event
    };
    event.timestamp_ns = now;
    event.suppressed = budget.suppressed;
    event.slot = slot;
    event.length = ctx.len();
    event.sport = 0;
    event.dport = 0;
    event.reason = reason;
    event.direction = direction;
    event.family = 0;
    event.protocol = 0;
    describe(&ctx, event);
    budget.suppressed = 0;
    entry.submit(0);
}

/// Fills in the packet's addresses, protocol and ports, as far as its headers go. Not
/// `packet::parse`: its flow would not fit the stack next to the dropping program's;
/// IPv6 extension headers are walked here with one 4-byte read each.
#[inline(always)]
pub fn describe(ctx: &TcContext, event: &mut DropEvent) {
    // SAFETY: the context pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return;
    }
    let Ok(ethertype) = ctx.load::<u16>(12).map(u16::from_be) else {
        return;
    };
    let (l4_offset, protocol, later_fragment) = match ethertype {
        0x0800 => {
            let Ok(header) = ctx.load::<[u8; 20]>(ETH_HLEN) else {
                return;
            };
            event.family = 4;
            event.src[..4].copy_from_slice(&header[12..16]);
            event.dst[..4].copy_from_slice(&header[16..20]);
            let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
            let ihl = usize::from(header[0] & 0x0f) * 4;
            (ETH_HLEN + ihl, header[9], fragment_offset != 0)
        }
        0x86dd => {
            let Ok(header) = ctx.load::<[u8; 40]>(ETH_HLEN) else {
                return;
            };
            event.family = 6;
            event.src.copy_from_slice(&header[8..24]);
            event.dst.copy_from_slice(&header[24..40]);
            skip_ipv6_extensions(ctx, header[6])
        }
        _ => return,
    };
    event.protocol = protocol;
    if (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)
        && !later_fragment
        && let Ok(ports) = ctx.load::<[u8; 4]>(l4_offset)
    {
        event.sport = u16::from_be_bytes([ports[0], ports[1]]);
        event.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
}

/// The transport header's offset and protocol after the IPv6 extension headers that
/// start with `next`, and whether the packet is a later fragment. Stops at the first
/// header it cannot read (the ports are then not shown).
#[inline(always)]
fn skip_ipv6_extensions(ctx: &TcContext, mut next: u8) -> (usize, u8, bool) {
    let mut offset = ETH_HLEN + 40;
    let mut later_fragment = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next) {
            break;
        }
        // Next header, length, and for a fragment header its offset.
        let Ok(header) = ctx.load::<[u8; 4]>(offset) else {
            break;
        };
        offset += if next == IPV6_FRAGMENT {
            later_fragment |= u16::from_be_bytes([header[2], header[3]]) & 0xfff8 != 0;
            8
        } else {
            ipv6_extension_len(next, header[1])
        };
        next = header[0];
    }
    (offset, next, later_fragment)
}
