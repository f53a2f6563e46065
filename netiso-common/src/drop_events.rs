//! What the datapath reports of a dropped packet for `netiso monitor`: the reasons,
//! the event in the ring buffer, and the rate limit of reports.
/// Why the datapath dropped a packet. The order is the wire format of
/// [`DropEvent::reason`]; the names are the `reason` label of the drop counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A container sent from a port it does not own.
    PortNotOwned = 0,
    Malformed = 1,
    /// Not IP, or IP of a protocol containers may not send.
    Other = 2,
    /// A container sent with another source address or MAC than the host's.
    Spoofed = 3,
    /// A later fragment of a datagram the container did not start.
    Fragment = 4,
    Icmp = 5,
    Multicast = 6,
    /// To a host port closed to containers.
    HostPort = 7,
    /// Over the container's egress policer.
    RateLimit = 8,
    /// From the network with a source no host can have (the host's own, loopback…).
    SpoofedSource = 9,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::PortNotOwned,
        DropReason::Malformed,
        DropReason::Other,
        DropReason::Spoofed,
        DropReason::Fragment,
        DropReason::Icmp,
        DropReason::Multicast,
        DropReason::HostPort,
        DropReason::RateLimit,
        DropReason::SpoofedSource,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::PortNotOwned => "port_not_owned",
            DropReason::Malformed => "malformed",
            DropReason::Other => "other",
            DropReason::Spoofed => "spoofed",
            DropReason::Fragment => "fragment",
            DropReason::Icmp => "icmp",
            DropReason::Multicast => "multicast",
            DropReason::HostPort => "host_port",
            DropReason::RateLimit => "rate_limit",
            DropReason::SpoofedSource => "spoofed_source",
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }
}

/// One dropped packet, as the datapath reports it through `DROP_EVENTS` while the
/// agent has a listener (`DROP_EVENTS_SWITCH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when it was dropped.
    pub timestamp_ns: u64,
    /// Drops this CPU did not report since its previous event (over the event rate
    /// limit, or the ring buffer full).
    pub suppressed: u64,
    /// The container's slot; [`NO_CONTAINER`] if none is known.
    pub slot: u32,
    /// The packet's length in bytes.
    pub length: u32,
    /// Addresses (IPv4 in the first 4 bytes); zero when not IP.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// TCP or UDP ports, else 0.
    pub sport: u16,
    pub dport: u16,
    /// A [`DropReason`].
    pub reason: u8,
    /// A [`Direction`] from the container's side: `Egress` for what it sent.
    pub direction: u8,
    /// 4, 6, or 0 when not IP (or malformed).
    pub family: u8,
    /// The transport protocol (IPPROTO_*), 0 when not IP.
    pub protocol: u8,
}

#[cfg(feature = "user")]
// SAFETY: plain integers and byte arrays; 72 bytes without padding.
unsafe impl aya::Pod for DropEvent {}

/// [`DropEvent::slot`] when the packet is no container's.
pub const NO_CONTAINER: u32 = u32::MAX;

/// Drop events each CPU may report per second, and in one burst: a flood of drops
/// costs the datapath a counter increment each, not an event.
pub const DROP_EVENTS_PER_SECOND: u64 = 2000;
pub const DROP_EVENT_BURST: u64 = 200;

/// Per-CPU state of the event rate limit: a token bucket counted in nanoseconds of
/// credit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEventBudget {
    pub credit_ns: u64,
    pub last_ns: u64,
    pub suppressed: u64,
}

#[cfg(feature = "user")]
// SAFETY: three u64 fields.
unsafe impl aya::Pod for DropEventBudget {}

/// Size of the drop event ring buffer (a power of two of pages).
pub const DROP_EVENTS_BYTES: u32 = 256 * 1024;
