//! Drop events (`netiso monitor`): off, a drop costs nothing but its counter; on, each
//! drop is described in the ring buffer until the per-CPU rate limit, after which it
//! is counted as suppressed, so that every drop is either reported or accounted for.
use aya::maps::{MapData, RingBuf};
use netiso_common::{
    DROP_EVENT_BUDGETS_MAP, DROP_EVENT_BURST, DROP_EVENTS_MAP, DROP_EVENTS_PER_SECOND,
    DROP_EVENTS_SWITCH_MAP, Direction, DropEvent, DropEventBudget, DropReason,
};

use super::fixtures::*;

fn switch(ebpf: &mut Ebpf, on: bool) {
    let mut switch: Array<_, u32> =
        Array::try_from(ebpf.map_mut(DROP_EVENTS_SWITCH_MAP).unwrap()).unwrap();
    switch.set(0, u32::from(on), 0).unwrap();
}

fn events(ebpf: &mut Ebpf) -> Vec<DropEvent> {
    let mut ring = RingBuf::try_from(ebpf.map_mut(DROP_EVENTS_MAP).unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<DropEvent>());
        // SAFETY: the datapath writes whole DropEvents.
        events.push(unsafe { item.as_ptr().cast::<DropEvent>().read_unaligned() });
    }
    events
}

fn suppressed_now(ebpf: &Ebpf) -> u64 {
    let budgets: PerCpuArray<&MapData, DropEventBudget> =
        PerCpuArray::try_from(ebpf.map(DROP_EVENT_BUDGETS_MAP).unwrap()).unwrap();
    budgets
        .get(&0, 0)
        .unwrap()
        .iter()
        .map(|b| b.suppressed)
        .sum()
}

#[test]
fn a_drop_is_described_while_switched_on_and_not_otherwise() {
    let mut ebpf = datapath();
    let unowned = udp4_out(32502, REMOTE_IPV4, 53);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned), SHOT);
    assert!(events(&mut ebpf).is_empty(), "reported while switched off");
    switch(&mut ebpf, true);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned), SHOT);
    let other_ipv6: Ipv6Addr = "2001:db8::99".parse().unwrap();
    let spoofed6 = v6(
        other_ipv6,
        REMOTE_IPV6,
        IPPROTO_TCP,
        &tcp_segment(31000, 443),
    );
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &spoofed6), SHOT);
    let owned = udp4_out(30016, REMOTE_IPV4, 53);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &owned), REDIRECT);
    let events = events(&mut ebpf);
    assert_eq!(events.len(), 2, "one event per drop, none for what passed");
    let udp = &events[0];
    assert_eq!(udp.slot, 0);
    assert_eq!(udp.reason, DropReason::PortNotOwned as u8);
    assert_eq!(udp.direction, Direction::Egress as u8);
    assert_eq!((udp.family, udp.protocol), (4, IPPROTO_UDP));
    assert_eq!(&udp.src[..4], &HOST_IPV4.octets());
    assert_eq!(&udp.dst[..4], &REMOTE_IPV4.octets());
    assert_eq!((udp.sport, udp.dport), (32502, 53));
    assert_eq!(udp.length as usize, unowned.len());
    assert_eq!(udp.suppressed, 0);
    let tcp = &events[1];
    assert_eq!(tcp.reason, DropReason::Spoofed as u8);
    assert_eq!((tcp.family, tcp.protocol), (6, IPPROTO_TCP));
    assert_eq!(tcp.src, other_ipv6.octets());
    assert_eq!((tcp.sport, tcp.dport), (31000, 443));
    switch(&mut ebpf, false);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned), SHOT);
    assert!(
        self::events(&mut ebpf).is_empty(),
        "reported after switching off"
    );
}

#[test]
fn an_ipv6_drop_behind_extension_headers_is_described_with_its_ports() {
    let mut ebpf = datapath();
    switch(&mut ebpf, true);
    // Hop-by-hop options, destination options (16 bytes), then the first fragment of a
    // UDP datagram from a port the container does not own.
    let mut payload = ipv6_ext_header(60, 0);
    payload.extend(ipv6_ext_header(44, 1));
    payload.extend(ipv6_fragment(IPPROTO_UDP, 0, true, 7));
    payload.extend(udp_segment(32502, 53, 16));
    let unowned = v6(HOST_IPV6, REMOTE_IPV6, 0, &payload);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned), SHOT);
    // A later fragment of it has no ports to show.
    let mut later = ipv6_ext_header(44, 0);
    later.extend(ipv6_fragment(IPPROTO_UDP, 2, false, 8));
    later.extend([0u8; 16]);
    let stray = v6(HOST_IPV6, REMOTE_IPV6, 0, &later);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &stray), SHOT);
    // A hostile chain: a header claiming 1608 bytes the packet does not have.
    let mut lying = ipv6_ext_header(IPPROTO_UDP, 0);
    lying[1] = 200;
    lying.extend(udp_segment(30016, 53, 16));
    let lying = v6(HOST_IPV6, REMOTE_IPV6, 0, &lying);
    assert_eq!(run(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &lying), SHOT);
    let events = events(&mut ebpf);
    assert_eq!(events.len(), 3, "one event per drop");
    let lying = &events[2];
    assert_eq!(lying.reason, DropReason::Malformed as u8);
    assert_eq!(
        (lying.family, lying.protocol, lying.sport, lying.dport),
        (6, IPPROTO_UDP, 0, 0),
        "no ports read past the packet"
    );
    let first = &events[0];
    assert_eq!(first.reason, DropReason::PortNotOwned as u8);
    assert_eq!((first.family, first.protocol), (6, IPPROTO_UDP));
    assert_eq!((first.sport, first.dport), (32502, 53));
    let later = &events[1];
    assert_eq!(later.reason, DropReason::Fragment as u8);
    assert_eq!((later.family, later.protocol), (6, IPPROTO_UDP));
    assert_eq!((later.sport, later.dport), (0, 0));
}

#[test]
fn a_flood_of_drops_is_reported_up_to_the_rate_limit_and_every_drop_is_accounted_for() {
    let mut ebpf = datapath();
    switch(&mut ebpf, true);
    let unowned = udp4_out(32502, REMOTE_IPV4, 53);
    let flood = 20_000;
    let started = std::time::Instant::now();
    assert_eq!(
        run_repeated(&ebpf, CONTAINER_VETH_INGRESS_PROGRAM, &unowned, flood),
        SHOT
    );
    let elapsed = started.elapsed().as_secs_f64();
    let events = events(&mut ebpf);
    // The burst, and what the rate refills while the flood runs (milliseconds here,
    // longer under a VM's emulation: the bound follows the time it took).
    let allowed = DROP_EVENT_BURST + (DROP_EVENTS_PER_SECOND as f64 * elapsed).ceil() as u64 + 1;
    assert!(
        !events.is_empty() && events.len() as u64 <= allowed,
        "{} events for {flood} drops in {elapsed:.3} s (at most {allowed})",
        events.len()
    );
    let reported = events.len() as u64;
    let suppressed: u64 = events.iter().map(|e| e.suppressed).sum::<u64>() + suppressed_now(&ebpf);
    assert_eq!(
        reported + suppressed,
        u64::from(flood),
        "every drop is reported or counted as suppressed"
    );
    assert_eq!(
        counters(&ebpf, 0).tx_dropped_port_not_owned,
        u64::from(flood)
    );
}
