//! Types shared by the eBPF datapath (`netiso-ebpf`) and the agent (`netiso`).
//!
//! Everything here is `#[repr(C)]` and plain old data, because the kernel side and the
//! user side see the same bytes through BPF maps.
#![no_std]

/// Packet and byte counters for one slot of a counter map.
///
/// Bytes are the length of the frame as tc sees it, Ethernet header included.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: two u64 fields, no padding, every bit pattern is valid.
unsafe impl aya::Pod for TrafficCounters {}

/// Which way a packet crossed the interface the program is attached to.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What kind of packet was counted: the L3 family and, for IP, the L4 protocol of the
/// first header (IPv6 extension headers are not walked here, so they count as `Other`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficClass {
    Ipv4Tcp = 0,
    Ipv4Udp = 1,
    Ipv4Icmp = 2,
    Ipv4Other = 3,
    Ipv6Tcp = 4,
    Ipv6Udp = 5,
    Ipv6Icmp = 6,
    Ipv6Other = 7,
    Arp = 8,
    /// Anything else, including VLAN-tagged and truncated frames.
    Other = 9,
}

impl TrafficClass {
    pub const COUNT: u32 = 10;

    pub const ALL: [TrafficClass; Self::COUNT as usize] = [
        TrafficClass::Ipv4Tcp,
        TrafficClass::Ipv4Udp,
        TrafficClass::Ipv4Icmp,
        TrafficClass::Ipv4Other,
        TrafficClass::Ipv6Tcp,
        TrafficClass::Ipv6Udp,
        TrafficClass::Ipv6Icmp,
        TrafficClass::Ipv6Other,
        TrafficClass::Arp,
        TrafficClass::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            TrafficClass::Ipv4Tcp => "ipv4_tcp",
            TrafficClass::Ipv4Udp => "ipv4_udp",
            TrafficClass::Ipv4Icmp => "ipv4_icmp",
            TrafficClass::Ipv4Other => "ipv4_other",
            TrafficClass::Ipv6Tcp => "ipv6_tcp",
            TrafficClass::Ipv6Udp => "ipv6_udp",
            TrafficClass::Ipv6Icmp => "ipv6_icmp",
            TrafficClass::Ipv6Other => "ipv6_other",
            TrafficClass::Arp => "arp",
            TrafficClass::Other => "other",
        }
    }
}

/// Number of slots in [`PUBLIC_IFACE_COUNTERS_MAP`]: one per direction and class.
pub const PUBLIC_IFACE_COUNTER_SLOTS: u32 = 2 * TrafficClass::COUNT;

/// Index of the counter slot for `direction` and `class` in the public interface's
/// per-CPU counter array.
pub const fn public_iface_counter_slot(direction: Direction, class: TrafficClass) -> u32 {
    direction as u32 * TrafficClass::COUNT + class as u32
}

/// Name of the per-CPU array counting what crosses the public interface.
pub const PUBLIC_IFACE_COUNTERS_MAP: &str = "PUBLIC_IFACE_COUNTERS";

/// Names of the tc programs in the eBPF object.
pub const PUBLIC_INGRESS_PROGRAM: &str = "public_ingress";
pub const PUBLIC_EGRESS_PROGRAM: &str = "public_egress";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_slots_are_distinct_and_in_range() {
        let mut seen = [false; PUBLIC_IFACE_COUNTER_SLOTS as usize];
        for direction in Direction::ALL {
            for class in TrafficClass::ALL {
                let slot = public_iface_counter_slot(direction, class);
                assert!(slot < PUBLIC_IFACE_COUNTER_SLOTS);
                assert!(!seen[slot as usize], "slot {slot} used twice");
                seen[slot as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
