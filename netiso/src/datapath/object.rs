//! The eBPF object: its bytes, loading it with every map pinned, and refusing pinned
//! maps of another layout.
use std::{io, path::Path};

use anyhow::{Context as _, bail};
use aya::{Ebpf, EbpfLoader, maps::MapData};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ECHO_IDS_MAP, CONTAINER_ETH0_INDEXES_MAP,
    CONTAINER_NETNS_MAP, CONTAINER_PORT_TRANSLATIONS_MAP, CONTAINER_SHAPING_MAP,
    CONTAINER_SLOT_GLOBAL, ContainerCounters, ContainerLoopback, ContainerPort, ContainerShaping,
    DATAPATH_CONFIG_MAP, DROP_EVENT_BUDGETS_MAP, DROP_EVENTS_BYTES, DROP_EVENTS_MAP,
    DROP_EVENTS_SWITCH_MAP, DatapathConfig, DropEventBudget, ECHO_OWNERS_MAP, EGRESS_POLICERS_MAP,
    EchoConversation, EchoIdRange, EchoKey, EgressPolicer, FRAGMENT_ROUTES_MAP, FragmentKey,
    FragmentRoute, HOST_ADDRESSES_MAP, HOST_PORT_ACCESS_MAP, HostAddress, INBOUND_FRAGMENTS_MAP,
    MAX_CONTAINERS, MAX_ECHO_CONVERSATIONS, MAX_FRAGMENTED_DATAGRAMS, MAX_HOST_ADDRESSES,
    MAX_PORT_TRANSLATIONS, PORT_OWNERS_MAP, PORT_TRANSLATIONS_MAP, PUBLIC_IFACE_COUNTER_SLOTS,
    PUBLIC_IFACE_COUNTERS_MAP, PortOwner, TrafficCounters, VETH_CONTAINERS_MAP,
};

/// The eBPF object built from `netiso-ebpf` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netiso"));

/// Every pinned map with its layout: (name, key size, value size, entries).
pub(super) const PINNED_MAPS: [(&str, usize, usize, u32); 21] = [
    (
        PUBLIC_IFACE_COUNTERS_MAP,
        size_of::<u32>(),
        size_of::<TrafficCounters>(),
        PUBLIC_IFACE_COUNTER_SLOTS,
    ),
    (
        PORT_OWNERS_MAP,
        size_of::<u32>(),
        size_of::<PortOwner>(),
        65536,
    ),
    (
        VETH_CONTAINERS_MAP,
        size_of::<u32>(),
        size_of::<u32>(),
        MAX_CONTAINERS,
    ),
    (
        CONTAINER_COUNTERS_MAP,
        size_of::<u32>(),
        size_of::<ContainerCounters>(),
        MAX_CONTAINERS,
    ),
    (
        DATAPATH_CONFIG_MAP,
        size_of::<u32>(),
        size_of::<DatapathConfig>(),
        1,
    ),
    (
        ECHO_OWNERS_MAP,
        size_of::<EchoKey>(),
        size_of::<EchoConversation>(),
        MAX_ECHO_CONVERSATIONS,
    ),
    (
        CONTAINER_ECHO_IDS_MAP,
        size_of::<u32>(),
        size_of::<EchoIdRange>(),
        MAX_CONTAINERS,
    ),
    (
        CONTAINER_SHAPING_MAP,
        size_of::<u32>(),
        size_of::<ContainerShaping>(),
        MAX_CONTAINERS,
    ),
    (
        HOST_PORT_ACCESS_MAP,
        size_of::<u32>(),
        size_of::<u8>(),
        65536,
    ),
    (
        HOST_ADDRESSES_MAP,
        size_of::<HostAddress>(),
        size_of::<u8>(),
        MAX_HOST_ADDRESSES,
    ),
    (
        EGRESS_POLICERS_MAP,
        size_of::<u32>(),
        size_of::<EgressPolicer>(),
        MAX_CONTAINERS,
    ),
    (
        INBOUND_FRAGMENTS_MAP,
        size_of::<FragmentKey>(),
        size_of::<PortOwner>(),
        MAX_FRAGMENTED_DATAGRAMS,
    ),
    (
        FRAGMENT_ROUTES_MAP,
        size_of::<FragmentKey>(),
        size_of::<FragmentRoute>(),
        MAX_FRAGMENTED_DATAGRAMS,
    ),
    (
        PORT_TRANSLATIONS_MAP,
        size_of::<u32>(),
        size_of::<u16>(),
        65536,
    ),
    (
        CONTAINER_PORT_TRANSLATIONS_MAP,
        size_of::<ContainerPort>(),
        size_of::<u16>(),
        MAX_PORT_TRANSLATIONS,
    ),
    (
        CONTAINER_NETNS_MAP,
        size_of::<u64>(),
        size_of::<ContainerLoopback>(),
        MAX_CONTAINERS,
    ),
    (
        CONTAINER_ETH0_INDEXES_MAP,
        size_of::<u32>(),
        size_of::<u32>(),
        MAX_CONTAINERS,
    ),
    // Shared with every copy of the object (the loopback copies), so there is one
    // ring buffer, not one per container. A ring buffer has no keys or values.
    (DROP_EVENTS_MAP, 0, 0, DROP_EVENTS_BYTES),
    (
        DROP_EVENTS_SWITCH_MAP,
        size_of::<u32>(),
        size_of::<u32>(),
        1,
    ),
    (
        DROP_EVENT_BUDGETS_MAP,
        size_of::<u32>(),
        size_of::<DropEventBudget>(),
        1,
    ),
    // aya-log's ring buffer (128 KiB).
    (LOG_MAP, 0, 0, 1 << 17),
];

/// Fails unless this binary carries the eBPF object, and checks every map pinned
/// under `pin_root` has this build's layout.
pub(super) fn check_pins(pin_root: &Path) -> anyhow::Result<()> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this netiso binary was built with AYA_BUILD_SKIP=1 and has no eBPF programs; rebuild it without that variable"
        );
    }
    for (name, key_size, value_size, entries) in PINNED_MAPS {
        check_pinned_map_layout(&pin_root.join(name), key_size, value_size, entries)?;
    }
    Ok(())
}

/// How much of the datapath's decisions the programs log (aya-log's level, a
/// load-time constant: off, the verifier removes the logging code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The values aya-log's level global takes, for loaders that borrow them.
static LOG_LEVELS: [u8; 6] = [0, 1, 2, 3, 4, 5];

/// The global the programs' log statements compare their level with.
const LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
/// aya-log's ring buffer, pinned so that the per-container copies share it.
pub const LOG_MAP: &str = "AYA_LOGS";

/// A loader for the object with its logging at `level` (the tests and benchmarks
/// load it this way too; aya-log's own default logs everything).
pub fn loader(level: DatapathLogLevel) -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    loader.override_global(LOG_LEVEL_GLOBAL, &LOG_LEVELS[level as usize], true);
    loader
}

/// Loads the object with every map taken from (or pinned to) `pin_root`.
pub(super) fn load(pin_root: &Path, log_level: DatapathLogLevel) -> anyhow::Result<Ebpf> {
    // (The loader reads the kernel's BTF itself, where there is one.)
    let mut loader = loader(log_level);
    for (name, ..) in PINNED_MAPS {
        loader.map_pin_path(name, pin_root.join(name));
    }
    loader.load(EBPF_OBJECT).context(
        "loading the eBPF object into the kernel (needs root and a kernel with BPF and BTF)",
    )
}

/// The values a copy's `CONTAINER_SLOT` can take, one per slot, for a loader that
/// lives as long as the agent (it borrows the values it sets).
static SLOTS: [u32; MAX_CONTAINERS as usize] = {
    let mut slots = [0; MAX_CONTAINERS as usize];
    let mut slot = 0;
    while slot < slots.len() {
        slots[slot] = slot as u32;
        slot += 1;
    }
    slots
};

/// Loads copies of the object for containers' loopback programs (kernels before
/// 6.15), each told its container's slot. One loader serves every copy: making a
/// loader reads and parses the kernel's BTF (5 MB, tens of milliseconds), which the
/// object does not need (it has no CO-RE relocations), so it is dropped at once.
pub(super) struct CopyLoader(EbpfLoader<'static>);

impl CopyLoader {
    pub(super) fn new(pin_root: &Path, log_level: DatapathLogLevel) -> Self {
        let mut loader = loader(log_level);
        loader.btf(None);
        for (name, ..) in PINNED_MAPS {
            loader.map_pin_path(name, pin_root.join(name));
        }
        Self(loader)
    }

    /// A copy for the container in `slot`.
    pub(super) fn load(&mut self, slot: u32) -> anyhow::Result<Ebpf> {
        let value = SLOTS
            .get(slot as usize)
            .with_context(|| format!("slot {slot} is beyond the datapath's {MAX_CONTAINERS}"))?;
        self.0
            .override_global(CONTAINER_SLOT_GLOBAL, value, true)
            .load(EBPF_OBJECT)
            .context("loading a copy of the eBPF object for a container's loopback")
    }
}

/// Refuses to reuse a pinned map whose layout differs from this build's (aya reuses
/// pinned maps without checking, which would corrupt counters silently).
fn check_pinned_map_layout(
    pin: &Path,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
) -> anyhow::Result<()> {
    let map = match MapData::from_pin(pin) {
        Ok(map) => map,
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            return Ok(());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("opening pinned map {}", pin.display()));
        }
    };
    let info = map.info()?;
    let found = (info.key_size(), info.value_size(), info.max_entries());
    let wanted = (key_size as u32, value_size as u32, max_entries);
    if found != wanted {
        bail!(
            "pinned map {} has layout (key, value, entries) {found:?} but this netiso needs {wanted:?}; it was made by another netiso version: remove it with `rm {}` and start again",
            pin.display(),
            pin.display()
        );
    }
    Ok(())
}
