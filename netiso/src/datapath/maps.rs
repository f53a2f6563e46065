//! The datapath's maps, each taken once out of the loaded object into a typed handle
//! (as bpf2go's generated objects do), so no use looks a map up by its name.
use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ECHO_IDS_MAP, CONTAINER_ETH0_INDEXES_MAP,
    CONTAINER_NETNS_MAP, CONTAINER_PORT_TRANSLATIONS_MAP, CONTAINER_SHAPING_MAP, ContainerCounters,
    ContainerLoopback, ContainerPort, ContainerShaping, DATAPATH_CONFIG_MAP, DROP_EVENTS_MAP,
    DROP_EVENTS_SWITCH_MAP, DatapathConfig, EGRESS_POLICERS_MAP, EchoIdRange, EgressPolicer,
    HOST_PORT_ACCESS_MAP, PINNED_LAYOUT_MAP, PORT_OWNERS_MAP, PORT_TRANSLATIONS_MAP,
    PUBLIC_IFACE_COUNTERS_MAP, PinnedLayout, PortOwner, TrafficCounters, VETH_CONTAINERS_MAP,
};

/// The maps userspace reads or writes. (`ECHO_OWNERS` is the datapath's own.)
pub struct DatapathMaps {
    /// Port → the container that owns it (slot and host veth): inbound steering.
    pub port_owners: Array<MapData, PortOwner>,
    /// Host veth ifindex → slot: whose packets a veth carries.
    pub veth_containers: HashMap<MapData, u32, u32>,
    pub container_counters: PerCpuArray<MapData, ContainerCounters>,
    pub container_shaping: Array<MapData, ContainerShaping>,
    /// Slot → its egress limit as the datapath polices it.
    pub egress_policers: Array<MapData, EgressPolicer>,
    /// Slot → the identifiers its echo requests leave with (its ephemeral range).
    pub container_echo_ids: Array<MapData, EchoIdRange>,
    pub config: Array<MapData, DatapathConfig>,
    /// Host port → whether containers may reach it.
    pub host_port_access: Array<MapData, u8>,
    pub public_iface_counters: PerCpuArray<MapData, TrafficCounters>,
    /// Host port → the port its owner listens on inside, where they differ.
    pub port_translations: Array<MapData, u16>,
    /// (slot, port inside) → the host port it is published on.
    pub container_port_translations: HashMap<MapData, ContainerPort, u16>,
    /// Cookie of a container's namespace → its slot and eth0 (for the shared
    /// loopback program).
    pub container_netns: HashMap<MapData, u64, ContainerLoopback>,
    /// Slot → its eth0's ifindex (for the loopback program's per-container copies).
    pub container_eth0_indexes: Array<MapData, u32>,
    /// Entry 0: the layout of the state pinned with these maps.
    pub layout: Array<MapData, PinnedLayout>,
}

impl DatapathMaps {
    /// Takes the maps out of `ebpf`. Its programs keep referring to them by
    /// descriptor, which these handles keep open.
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            port_owners: Array::try_from(take(ebpf, PORT_OWNERS_MAP)?)?,
            veth_containers: HashMap::try_from(take(ebpf, VETH_CONTAINERS_MAP)?)?,
            container_counters: PerCpuArray::try_from(take(ebpf, CONTAINER_COUNTERS_MAP)?)?,
            container_shaping: Array::try_from(take(ebpf, CONTAINER_SHAPING_MAP)?)?,
            container_echo_ids: Array::try_from(take(ebpf, CONTAINER_ECHO_IDS_MAP)?)?,
            egress_policers: Array::try_from(take(ebpf, EGRESS_POLICERS_MAP)?)?,
            config: Array::try_from(take(ebpf, DATAPATH_CONFIG_MAP)?)?,
            host_port_access: Array::try_from(take(ebpf, HOST_PORT_ACCESS_MAP)?)?,
            public_iface_counters: PerCpuArray::try_from(take(ebpf, PUBLIC_IFACE_COUNTERS_MAP)?)?,
            port_translations: Array::try_from(take(ebpf, PORT_TRANSLATIONS_MAP)?)?,
            container_port_translations: HashMap::try_from(take(
                ebpf,
                CONTAINER_PORT_TRANSLATIONS_MAP,
            )?)?,
            container_netns: HashMap::try_from(take(ebpf, CONTAINER_NETNS_MAP)?)?,
            container_eth0_indexes: Array::try_from(take(ebpf, CONTAINER_ETH0_INDEXES_MAP)?)?,
            layout: Array::try_from(take(ebpf, PINNED_LAYOUT_MAP)?)?,
        })
    }
}

/// The maps of drop events (`netiso monitor`): the ring buffer the datapath writes
/// them into, and the switch that tells it someone listens.
pub struct DropEventMaps {
    pub events: RingBuf<MapData>,
    pub switch: Array<MapData, u32>,
}

impl DropEventMaps {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            events: RingBuf::try_from(take(ebpf, DROP_EVENTS_MAP)?)?,
            switch: Array::try_from(take(ebpf, DROP_EVENTS_SWITCH_MAP)?)?,
        })
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}
