//! Types shared by the eBPF datapath (`netiso-ebpf`) and the agent (`netiso`).
//!
//! Everything here is `#[repr(C)]` and plain old data, because the kernel side and the
//! user side see the same bytes through BPF maps.
#![no_std]

mod drop_events;
mod layout;
mod names;
pub use drop_events::*;
pub use layout::{
    LAYOUT_VERSION, LayoutState, PINNED_LAYOUT_MAGIC, PINNED_LAYOUT_MAP, PinnedLayout,
};
pub use names::*;

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

/// Most containers one agent can hold (slots 0..MAX_CONTAINERS).
pub const MAX_CONTAINERS: u32 = 4096;

/// Who owns a port: one entry per port number, for TCP and UDP alike (as in Mesos, a
/// port resource covers both).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortOwner {
    /// Container slot + 1; 0 means no container owns the port (the host does).
    pub container: u32,
    /// Host-side veth of the owner, where inbound packets are redirected.
    pub veth_ifindex: u32,
}

impl PortOwner {
    pub const fn new(slot: u32, veth_ifindex: u32) -> Self {
        Self {
            container: slot + 1,
            veth_ifindex,
        }
    }

    /// The owner's slot, or `None` for a port of the host.
    pub const fn slot(&self) -> Option<u32> {
        if self.container == 0 {
            None
        } else {
            Some(self.container - 1)
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: two u32 fields, no padding.
unsafe impl aya::Pod for PortOwner {}

/// A port inside a container: the key of `CONTAINER_PORT_TRANSLATIONS`, whose value is
/// the host port it is published on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    pub slot: u32,
    pub port: u16,
    pub _pad: u16,
}

#[cfg(feature = "user")]
// SAFETY: a u32, a u16 and explicit padding: 8 bytes, no implicit padding.
unsafe impl aya::Pod for ContainerPort {}

/// Most published ports whose container port differs, over all containers.
pub const MAX_PORT_TRANSLATIONS: u32 = 16384;

/// A container's connection to its own published host port, over its loopback: the
/// key of `LOOPBACK_TRANSLATIONS`, whose value is the host port the client asked for.
/// Its server listens on the container port, so replies get the host port back as
/// their source; connections straight to the container port have no entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoopbackFlow {
    pub slot: u32,
    /// The client's port.
    pub client_port: u16,
    /// The port the server listens on inside the container.
    pub container_port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
// SAFETY: a u32, two u16s, a u8 and explicit padding: 12 bytes, no implicit padding.
unsafe impl aya::Pod for LoopbackFlow {}

/// Most connections of containers to their own published host ports tracked at once
/// (least recently used forgotten first).
pub const MAX_LOOPBACK_TRANSLATIONS: u32 = 16384;

/// Host-wide facts the programs need. One entry, written by the agent at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// The host's IPv4 address in network byte order (as it appears in packets).
    pub host_ipv4: [u8; 4],
    /// The host's IPv6 address.
    pub host_ipv6: [u8; 16],
    /// Non-zero when the address above is set.
    pub has_ipv4: u32,
    pub has_ipv6: u32,
    /// Public interface, where traffic to remote hosts leaves.
    pub public_ifindex: u32,
    /// The host's loopback, where traffic to host services is delivered.
    pub host_lo_ifindex: u32,
    /// Handle (`major:0`) of the fq_codel on the public interface whose flows the
    /// datapath assigns (unique egress flows); 0 when that is off.
    pub egress_flows_qdisc: u32,
    /// The public interface's MAC, which containers' eth0 share: what every frame a
    /// container sends to the network must come from.
    pub host_mac: [u8; 6],
    /// Non-zero when every delivery must go through the host end of the veth: the
    /// kernel's `bpf_redirect_peer` does not count what it delivers in the veth's
    /// receive counters (before the 2023 fix), which the statistics report.
    pub deliver_through_veth: u8,
    pub _pad: u8,
}

#[cfg(feature = "user")]
// SAFETY: byte arrays and u32s, 48 bytes in total with no padding.
unsafe impl aya::Pod for DatapathConfig {}

/// Per-container counters, from the container's point of view. Per-CPU in the map;
/// the agent reports their sums as `netiso_datapath_statistics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct ContainerCounters {
    /// Packets steered to the container.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Packets the container sent that the datapath let through.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Sent from a TCP/UDP port the container does not own.
    pub tx_dropped_port_not_owned: u64,
    /// Sent with a header too short or malformed to read its ports.
    pub tx_dropped_malformed: u64,
    /// Sent as something a container may not send (ARP, IPv6 neighbour discovery and
    /// listener reports, other protocols).
    pub tx_dropped_other: u64,
    /// Sent with a source address or MAC that is not the container's (the host's).
    pub tx_dropped_spoofed: u64,
    /// A later fragment of no datagram the container started.
    pub tx_dropped_fragment: u64,
    /// ICMP a container may not send: anything but echo requests and errors about its
    /// own traffic (redirects, "packet too big" and the like).
    pub tx_dropped_icmp: u64,
    /// Sent to a multicast, broadcast or link-local address: not for the public
    /// network, which the container shares with the host.
    pub tx_dropped_multicast: u64,
    /// Sent faster than the container's egress limit allows, past its own qdiscs
    /// (a raw socket with `PACKET_QDISC_BYPASS`, say).
    pub tx_dropped_rate_limit: u64,
    /// Sent to a host service (a port of the host's address or loopback no container
    /// owns) that containers may not reach (`--container_host_ports`).
    pub tx_dropped_host_port: u64,
    /// Inbound from the network with a source no remote host can have (the host's
    /// own addresses, loopback, multicast, broadcast, IPv4-mapped): dropped before it
    /// reached the container that owns the port.
    pub rx_dropped_spoofed_source: u64,
}

#[cfg(feature = "user")]
// SAFETY: u64 fields only.
unsafe impl aya::Pod for ContainerCounters {}

impl ContainerCounters {
    /// Field-wise sum, for adding up per-CPU values.
    pub const fn add(self, other: Self) -> Self {
        Self {
            rx_packets: self.rx_packets + other.rx_packets,
            rx_bytes: self.rx_bytes + other.rx_bytes,
            tx_packets: self.tx_packets + other.tx_packets,
            tx_bytes: self.tx_bytes + other.tx_bytes,
            tx_dropped_port_not_owned: self.tx_dropped_port_not_owned
                + other.tx_dropped_port_not_owned,
            tx_dropped_malformed: self.tx_dropped_malformed + other.tx_dropped_malformed,
            tx_dropped_other: self.tx_dropped_other + other.tx_dropped_other,
            tx_dropped_spoofed: self.tx_dropped_spoofed + other.tx_dropped_spoofed,
            tx_dropped_fragment: self.tx_dropped_fragment + other.tx_dropped_fragment,
            tx_dropped_icmp: self.tx_dropped_icmp + other.tx_dropped_icmp,
            tx_dropped_multicast: self.tx_dropped_multicast + other.tx_dropped_multicast,
            tx_dropped_rate_limit: self.tx_dropped_rate_limit + other.tx_dropped_rate_limit,
            tx_dropped_host_port: self.tx_dropped_host_port + other.tx_dropped_host_port,
            rx_dropped_spoofed_source: self.rx_dropped_spoofed_source
                + other.rx_dropped_spoofed_source,
        }
    }
}

/// How a container's traffic is shaped, as the datapath needs to know it. One entry
/// per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerShaping {
    /// 1 if the container has an ingress limit: inbound packets then go through the
    /// htb on the host end of its veth (a redirect to its egress) instead of straight
    /// into the container (a redirect to the peer, which skips every qdisc).
    pub ingress_shaped: u32,
    /// The class id `major:flow` of the container's own flow in the public
    /// interface's fq_codel (unique egress flows), which its packets get as their
    /// priority on the way out; 0 for none.
    pub egress_flow_classid: u32,
}

/// The egress limit of a container as the datapath enforces it, on the host side
/// where the container cannot get around it: a policer behind the htb on the
/// container's own eth0, whose budget is a little above the limit, so that only
/// traffic that skipped that htb meets it. One entry per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicer {
    /// Bytes the container may send per [`POLICER_WINDOW_NS`]; 0 for no limit.
    pub window_budget: u64,
    /// The datapath's state: when the current window began (`bpf_ktime_get_ns`), and
    /// the bytes sent in it.
    pub window_start_ns: u64,
    pub window_bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: u64 fields only.
unsafe impl aya::Pod for EgressPolicer {}

/// The policer's window: 100 ms.
pub const POLICER_WINDOW_NS: u64 = 100_000_000;

/// Flows of the public interface's fq_codel with unique egress flows, as in Mesos: the
/// host's traffic in one, its ARP and ICMP in another, each container in its own from
/// [`FIRST_CONTAINER_EGRESS_FLOW`] on. fq_codel puts a packet whose priority is
/// `its handle's major:flow` (flow 1 ..= its flow count) in that flow.
pub const HOST_EGRESS_FLOW: u32 = 1;
pub const HOST_CONTROL_EGRESS_FLOW: u32 = 2;
pub const FIRST_CONTAINER_EGRESS_FLOW: u32 = 3;

#[cfg(feature = "user")]
// SAFETY: two u32 fields, no padding.
unsafe impl aya::Pod for ContainerShaping {}

/// An ICMP echo conversation a container started: replies carry the same identifier
/// and come from the address the request went to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EchoKey {
    /// The remote address; an IPv4 address fills the first 4 bytes.
    pub remote: [u8; 16],
    /// ICMP echo identifier, in network byte order as on the wire.
    pub id: u16,
    /// 1 for ICMPv6, 0 for ICMP.
    pub ipv6: u8,
    pub _pad: u8,
}

#[cfg(feature = "user")]
// SAFETY: byte array, u16 and two u8: 20 bytes, no implicit padding.
unsafe impl aya::Pod for EchoKey {}

/// Who an echo conversation belongs to: a container (whose request left with an
/// identifier of its own, `id` on the wire, translated from `original_id`), or the
/// host (`owner.container` 0), whose conversations containers never take over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoConversation {
    pub owner: PortOwner,
    /// The identifier the container's request had, in network byte order: replies get
    /// it back.
    pub original_id: u16,
    pub _pad: [u8; 6],
    /// When the last request of the conversation left (`bpf_ktime_get_ns`).
    pub last_request_ns: u64,
}

#[cfg(feature = "user")]
// SAFETY: u32s, a u16, bytes and a u64: 24 bytes, no implicit padding.
unsafe impl aya::Pod for EchoConversation {}

/// Most echo conversations remembered at once; the least recently used is forgotten.
pub const MAX_ECHO_CONVERSATIONS: u32 = 16384;

/// A host conversation holds its (remote, identifier) against containers this long
/// after its last request.
pub const HOST_ECHO_HOLD_NS: u64 = 30_000_000_000;

/// The identifiers a container's echo requests leave with: its ephemeral range, so
/// that they are as much its own as its ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoIdRange {
    pub begin: u16,
    /// 0 for a slot without a container.
    pub len: u16,
}

#[cfg(feature = "user")]
// SAFETY: two u16 fields, no padding.
unsafe impl aya::Pod for EchoIdRange {}

/// A fragmented datagram between a container and a peer: its fragments share the
/// peer's address, the protocol and the identification (the container's end is always
/// the host's address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// The peer: the destination of a datagram a container sends, the source of one
    /// it receives. An IPv4 address fills the first 4 bytes.
    pub peer: [u8; 16],
    /// IPv4's 16-bit or IPv6's 32-bit identification.
    pub id: u32,
    pub protocol: u8,
    /// 1 for IPv6, 0 for IPv4.
    pub ipv6: u8,
    pub _pad: [u8; 2],
}

#[cfg(feature = "user")]
// SAFETY: byte array, u32 and u8s: 24 bytes, no implicit padding.
unsafe impl aya::Pod for FragmentKey {}

/// Where the fragments of a datagram go, decided on its first fragment (the only one
/// with ports), and who may send them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentRoute {
    /// Sending container's slot + 1.
    pub sender: u32,
    /// [`FRAGMENTS_TO_NETWORK`], [`FRAGMENTS_TO_HOST`] or [`FRAGMENTS_TO_CONTAINER`].
    pub destination: u32,
    /// With [`FRAGMENTS_TO_CONTAINER`], the container the first fragment went to.
    pub owner: PortOwner,
}

pub const FRAGMENTS_TO_NETWORK: u32 = 0;
pub const FRAGMENTS_TO_HOST: u32 = 1;
pub const FRAGMENTS_TO_CONTAINER: u32 = 2;

#[cfg(feature = "user")]
// SAFETY: u32 fields only.
unsafe impl aya::Pod for FragmentRoute {}

/// An address of the host's (any of its interfaces', the shared one included): what
/// a container sends there is for the host's own services.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostAddress {
    /// An IPv4 address fills the first 4 bytes.
    pub address: [u8; 16],
    /// 1 for IPv6, 0 for IPv4.
    pub ipv6: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
// SAFETY: bytes only: 20 bytes, no implicit padding.
unsafe impl aya::Pod for HostAddress {}

/// Most host addresses the datapath knows.
pub const MAX_HOST_ADDRESSES: u32 = 1024;

/// Most fragmented datagrams followed at once; the least recently used is forgotten
/// (its later fragments are then dropped, as a reassembly timeout would).
pub const MAX_FRAGMENTED_DATAGRAMS: u32 = 4096;

/// A container as its loopback program needs it: `CONTAINER_NETNS` maps the cookie
/// of the container's network namespace to this.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerLoopback {
    pub slot: u32,
    /// The ifindex of its eth0, inside its namespace.
    pub eth0_ifindex: u32,
}

#[cfg(feature = "user")]
// SAFETY: two u32 fields, no padding.
unsafe impl aya::Pod for ContainerLoopback {}

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
