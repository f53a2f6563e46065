//! Every map of the datapath. BTF-defined, so `bpftool map dump` shows field names.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use netiso_common::{
    ContainerCounters, ContainerLoopback, ContainerPort, ContainerShaping, DROP_EVENTS_BYTES,
    DatapathConfig, Direction, DropEvent, DropEventBudget, EchoConversation, EchoIdRange, EchoKey,
    EgressPolicer, FragmentKey, FragmentRoute, HostAddress, LoopbackFlow, MAX_CONTAINERS,
    MAX_ECHO_CONVERSATIONS, MAX_FRAGMENTED_DATAGRAMS, MAX_HOST_ADDRESSES,
    MAX_LOOPBACK_TRANSLATIONS, MAX_PORT_TRANSLATIONS, PUBLIC_IFACE_COUNTER_SLOTS, PinnedLayout,
    PortOwner, TrafficClass, TrafficCounters, public_iface_counter_slot,
};

/// What crossed the public interface, per direction and traffic class. Per-CPU, so the
/// hot path never contends on a shared cache line; the agent sums the CPUs.
#[btf_map]
pub static PUBLIC_IFACE_COUNTERS: PerCpuArray<
    TrafficCounters,
    { PUBLIC_IFACE_COUNTER_SLOTS as usize },
> = PerCpuArray::new();

/// Port number → owning container. One array lookup per packet, whatever the number
/// of containers (Mesos walked a list of u32 filters).
#[btf_map]
pub static PORT_OWNERS: Array<PortOwner, 65536> = Array::new();

/// Host-side veth ifindex → container slot: tells the veth program whose packet it has.
#[btf_map]
pub static VETH_CONTAINERS: HashMap<u32, u32, { MAX_CONTAINERS as usize }> = HashMap::new();

/// Per-container counters, indexed by slot.
#[btf_map]
pub static CONTAINER_COUNTERS: PerCpuArray<ContainerCounters, { MAX_CONTAINERS as usize }> =
    PerCpuArray::new();

/// How each container is shaped, indexed by slot.
#[btf_map]
pub static CONTAINER_SHAPING: Array<ContainerShaping, { MAX_CONTAINERS as usize }> = Array::new();

/// The host's addresses and interfaces (entry 0).
#[btf_map]
pub static DATAPATH_CONFIG: Array<DatapathConfig, 1> = Array::new();

/// ICMP echo conversations of containers and of the host, so replies find their way
/// back (see `echo.rs`).
#[btf_map]
pub static ECHO_OWNERS: LruHashMap<EchoKey, EchoConversation, { MAX_ECHO_CONVERSATIONS as usize }> =
    LruHashMap::new();

/// Host ports (of the host's address and loopback, owned by no container) that
/// containers may not reach: `HOST_PORT_CLOSED`, else 0.
#[btf_map]
pub static HOST_PORT_ACCESS: Array<u8, 65536> = Array::new();

/// Every address of the host (the agent keeps it up to date): what containers send
/// there goes to the host's services, not out to the network.
#[btf_map]
pub static HOST_ADDRESSES: HashMap<HostAddress, u8, { MAX_HOST_ADDRESSES as usize }> =
    HashMap::new();

/// Each container's egress limit as the datapath enforces it, indexed by slot.
#[btf_map]
pub static EGRESS_POLICERS: Array<EgressPolicer, { MAX_CONTAINERS as usize }> = Array::new();

/// The echo identifiers each container's requests leave with, indexed by slot.
#[btf_map]
pub static CONTAINER_ECHO_IDS: Array<EchoIdRange, { MAX_CONTAINERS as usize }> = Array::new();

/// Fragmented datagrams containers send: where their later fragments go, and who may
/// send them.
#[btf_map]
pub static FRAGMENT_ROUTES: LruHashMap<
    FragmentKey,
    FragmentRoute,
    { MAX_FRAGMENTED_DATAGRAMS as usize },
> = LruHashMap::new();

/// Fragmented datagrams arriving from the network for a container: the container its
/// first fragment (the only one with ports) went to, so later fragments follow.
#[btf_map]
pub static INBOUND_FRAGMENTS: LruHashMap<
    FragmentKey,
    PortOwner,
    { MAX_FRAGMENTED_DATAGRAMS as usize },
> = LruHashMap::new();

/// Host port → the port its owner listens on inside, where they differ (0: the same
/// port). See `translate.rs`.
#[btf_map]
pub static PORT_TRANSLATIONS: Array<u16, 65536> = Array::new();

/// (container slot, port inside it) → the host port it is published on, where they
/// differ.
#[btf_map]
pub static CONTAINER_PORT_TRANSLATIONS: HashMap<
    ContainerPort,
    u16,
    { MAX_PORT_TRANSLATIONS as usize },
> = HashMap::new();

/// A container's connections to its own published host ports, over its loopback →
/// the host port asked for. See `container_lo_egress.rs`.
#[btf_map]
pub static LOOPBACK_TRANSLATIONS: LruHashMap<
    LoopbackFlow,
    u16,
    { MAX_LOOPBACK_TRANSLATIONS as usize },
> = LruHashMap::new();

/// Cookie of a container's network namespace → its slot and eth0, for the one
/// loopback program all containers share.
#[btf_map]
pub static CONTAINER_NETNS: HashMap<u64, ContainerLoopback, { MAX_CONTAINERS as usize }> =
    HashMap::new();

/// Slot → the ifindex of the container's eth0 (inside its namespace), for the copies
/// of the loopback program (kernels before 6.15), which know only their slot.
#[btf_map]
pub static CONTAINER_ETH0_INDEXES: Array<u32, { MAX_CONTAINERS as usize }> = Array::new();

/// Dropped packets described for `netiso monitor` (see `drop_events.rs`).
#[btf_map]
pub static DROP_EVENTS: RingBuf<DropEvent, { DROP_EVENTS_BYTES as usize }> = RingBuf::new();

/// Entry 0: whether the agent has a listener for drop events.
#[btf_map]
pub static DROP_EVENTS_SWITCH: Array<u32, 1> = Array::new();

/// Each CPU's drop event rate limit.
#[btf_map]
pub static DROP_EVENT_BUDGETS: PerCpuArray<DropEventBudget, 1> = PerCpuArray::new();

/// Entry 0: the layout version of everything pinned beside it. The programs never
/// read it; it is in the object so that it is pinned, with BTF, like every map.
#[btf_map]
pub static NETISO_LAYOUT: Array<PinnedLayout, 1> = Array::new();

/// Adds one packet of `bytes` bytes to the public interface's counters.
#[inline(always)]
pub fn count_public_iface(direction: Direction, class: TrafficClass, bytes: u32) {
    let slot = public_iface_counter_slot(direction, class);
    if let Some(counters) = PUBLIC_IFACE_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only written by the program running on this CPU,
        // and tc programs are not preempted by each other on one CPU.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(bytes);
        }
    }
}

/// Applies `update` to the current CPU's counters of container `slot`.
#[inline(always)]
pub fn count_container(slot: u32, update: impl FnOnce(&mut ContainerCounters)) {
    if let Some(counters) = CONTAINER_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, as above.
        unsafe { update(&mut *counters) }
    }
}

/// The owner of `port`, if a container owns it.
#[inline(always)]
pub fn port_owner(port: u16) -> Option<PortOwner> {
    PORT_OWNERS
        .get(u32::from(port))
        .copied()
        .filter(|owner| owner.container != 0)
}

#[inline(always)]
pub fn config() -> Option<&'static DatapathConfig> {
    DATAPATH_CONFIG.get(0)
}
