//! The layouts of the state the datapath pins under its bpffs root: which maps each
//! layout version pins, with what type and shape, and which version a root holds.
//! Reading a root changes nothing: state this agent cannot take is refused with one
//! line, before anything is loaded or attached.
use std::{io, path::Path};

use anyhow::{Context as _, bail};
use aya::maps::{Array, Map, MapData, MapError, MapType};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, CONTAINER_ECHO_IDS_MAP, CONTAINER_ETH0_INDEXES_MAP,
    CONTAINER_NETNS_MAP, CONTAINER_PORT_TRANSLATIONS_MAP, CONTAINER_SHAPING_MAP, ContainerCounters,
    ContainerLoopback, ContainerPort, ContainerShaping, DATAPATH_CONFIG_MAP,
    DROP_EVENT_BUDGETS_MAP, DROP_EVENTS_BYTES, DROP_EVENTS_MAP, DROP_EVENTS_SWITCH_MAP,
    DatapathConfig, DropEventBudget, ECHO_OWNERS_MAP, EGRESS_POLICERS_MAP, EchoConversation,
    EchoIdRange, EchoKey, EgressPolicer, FRAGMENT_ROUTES_MAP, FragmentKey, FragmentRoute,
    HOST_ADDRESSES_MAP, HOST_PORT_ACCESS_MAP, HostAddress, INBOUND_FRAGMENTS_MAP, LAYOUT_VERSION,
    LOOPBACK_TRANSLATIONS_MAP, LayoutState, LoopbackFlow, MAX_CONTAINERS, MAX_ECHO_CONVERSATIONS,
    MAX_FRAGMENTED_DATAGRAMS, MAX_HOST_ADDRESSES, MAX_LOOPBACK_TRANSLATIONS, MAX_PORT_TRANSLATIONS,
    PINNED_LAYOUT_MAGIC, PINNED_LAYOUT_MAP, PORT_OWNERS_MAP, PORT_TRANSLATIONS_MAP,
    PUBLIC_IFACE_COUNTER_SLOTS, PUBLIC_IFACE_COUNTERS_MAP, PinnedLayout, PortOwner,
    TrafficCounters, VETH_CONTAINERS_MAP,
};

use super::object::LOG_MAP;

/// Where an upgrade builds the new state, inside the pin root, before moving it in.
pub(super) const UPGRADE_DIR: &str = "upgrading";

/// A map as a layout pins it.
#[derive(Clone, Copy, Debug)]
pub struct PinnedMap {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn pinned<K, V>(name: &'static str, kind: MapType, max_entries: u32) -> PinnedMap {
    PinnedMap {
        name,
        kind,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
    }
}

/// A ring buffer has no keys or values, only a size.
const fn ring_buffer(name: &'static str, bytes: u32) -> PinnedMap {
    PinnedMap {
        name,
        kind: MapType::RingBuf,
        key_size: 0,
        value_size: 0,
        max_entries: bytes,
    }
}

/// Layout 1: netiso 0.1.0, which pinned no version of its own.
const LAYOUT_1: [PinnedMap; 21] = [
    pinned::<u32, TrafficCounters>(
        PUBLIC_IFACE_COUNTERS_MAP,
        MapType::PerCpuArray,
        PUBLIC_IFACE_COUNTER_SLOTS,
    ),
    pinned::<u32, PortOwner>(PORT_OWNERS_MAP, MapType::Array, 65536),
    pinned::<u32, u32>(VETH_CONTAINERS_MAP, MapType::Hash, MAX_CONTAINERS),
    pinned::<u32, ContainerCounters>(CONTAINER_COUNTERS_MAP, MapType::PerCpuArray, MAX_CONTAINERS),
    pinned::<u32, DatapathConfig>(DATAPATH_CONFIG_MAP, MapType::Array, 1),
    pinned::<EchoKey, EchoConversation>(ECHO_OWNERS_MAP, MapType::LruHash, MAX_ECHO_CONVERSATIONS),
    pinned::<u32, EchoIdRange>(CONTAINER_ECHO_IDS_MAP, MapType::Array, MAX_CONTAINERS),
    pinned::<u32, ContainerShaping>(CONTAINER_SHAPING_MAP, MapType::Array, MAX_CONTAINERS),
    pinned::<u32, u8>(HOST_PORT_ACCESS_MAP, MapType::Array, 65536),
    pinned::<HostAddress, u8>(HOST_ADDRESSES_MAP, MapType::Hash, MAX_HOST_ADDRESSES),
    pinned::<u32, EgressPolicer>(EGRESS_POLICERS_MAP, MapType::Array, MAX_CONTAINERS),
    pinned::<FragmentKey, PortOwner>(
        INBOUND_FRAGMENTS_MAP,
        MapType::LruHash,
        MAX_FRAGMENTED_DATAGRAMS,
    ),
    pinned::<FragmentKey, FragmentRoute>(
        FRAGMENT_ROUTES_MAP,
        MapType::LruHash,
        MAX_FRAGMENTED_DATAGRAMS,
    ),
    pinned::<u32, u16>(PORT_TRANSLATIONS_MAP, MapType::Array, 65536),
    pinned::<ContainerPort, u16>(
        CONTAINER_PORT_TRANSLATIONS_MAP,
        MapType::Hash,
        MAX_PORT_TRANSLATIONS,
    ),
    pinned::<u64, ContainerLoopback>(CONTAINER_NETNS_MAP, MapType::Hash, MAX_CONTAINERS),
    pinned::<u32, u32>(CONTAINER_ETH0_INDEXES_MAP, MapType::Array, MAX_CONTAINERS),
    // Shared with every copy of the object (the loopback copies), so there is one
    // ring buffer, not one per container.
    ring_buffer(DROP_EVENTS_MAP, DROP_EVENTS_BYTES),
    pinned::<u32, u32>(DROP_EVENTS_SWITCH_MAP, MapType::Array, 1),
    pinned::<u32, DropEventBudget>(DROP_EVENT_BUDGETS_MAP, MapType::PerCpuArray, 1),
    // aya-log's ring buffer.
    ring_buffer(LOG_MAP, 1 << 17),
];

/// The record of the layout itself, from layout 2 on.
const LAYOUT_RECORD: PinnedMap = pinned::<u32, PinnedLayout>(PINNED_LAYOUT_MAP, MapType::Array, 1);

/// What layout 3 added: the table of containers' connections to their own published
/// host ports.
const LAYOUT_3_ADDED: PinnedMap = pinned::<LoopbackFlow, u16>(
    LOOPBACK_TRANSLATIONS_MAP,
    MapType::LruHash,
    MAX_LOOPBACK_TRANSLATIONS,
);

/// The maps layout `version` pins; `None` for a version this agent does not know.
pub fn maps_of(version: u32) -> Option<Vec<PinnedMap>> {
    match version {
        1 => Some(LAYOUT_1.to_vec()),
        2 => Some([&LAYOUT_1[..], &[LAYOUT_RECORD]].concat()),
        3 => Some([&LAYOUT_1[..], &[LAYOUT_RECORD, LAYOUT_3_ADDED]].concat()),
        _ => None,
    }
}

/// The maps this agent pins.
pub fn current_maps() -> Vec<PinnedMap> {
    maps_of(LAYOUT_VERSION).expect("the current layout is listed")
}

/// What a pin root holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing pinned yet.
    Nothing,
    /// This agent's layout, whole.
    Current,
    /// An older layout, whole: to be upgraded in place.
    Older(u32),
    /// An upgrade to this agent's layout that stopped after its swap: only moving its
    /// maps in is left.
    Swapped,
}

/// Reads which layout `root` holds and checks that it is whole. Refuses, in one line
/// saying what to do, a layout from a newer netiso, one this agent does not know, a
/// damaged record, and a missing or misshapen map.
pub(super) fn inspect(root: &Path) -> anyhow::Result<Found> {
    if let Some(record) = read_record(root, &root.join(UPGRADE_DIR))?
        && record.version == LAYOUT_VERSION
        && record.state == LayoutState::Swapped as u32
    {
        return Ok(Found::Swapped);
    }
    let version = match read_record(root, root)? {
        Some(record) => record.version,
        None if LAYOUT_1.iter().any(|map| root.join(map.name).exists()) => 1,
        None => return Ok(Found::Nothing),
    };
    if version > LAYOUT_VERSION {
        bail!(
            "the pinned state under {} has layout {version}, newer than this netiso's layout {LAYOUT_VERSION}: a newer netiso made it; run that version or a newer one (netiso never downgrades pinned state)",
            root.display()
        );
    }
    let Some(maps) = maps_of(version) else {
        bail!(
            "the pinned state under {} has layout {version}, which this netiso (layout {LAYOUT_VERSION}) cannot upgrade; run the netiso release that made it, or remove the directory (`rm -r {}`: netiso's programs stay detached until the agent starts) and start the agent to rebuild it from its records",
            root.display(),
            root.display()
        );
    };
    for map in &maps {
        check_map(root, map, version)?;
    }
    Ok(if version == LAYOUT_VERSION {
        Found::Current
    } else {
        Found::Older(version)
    })
}

/// What an operator does with state this agent will not take as it is.
fn rebuild_advice(root: &Path) -> String {
    format!(
        "remove the directory (`rm -r {}`: netiso's programs stay detached until the agent starts) and start the agent, which rebuilds it from its records with counters from zero",
        root.display()
    )
}

/// Reads the layout record pinned in `dir` (the pin root `root` or its upgrade's
/// directory), if there is one; refuses one that is not netiso's record or is
/// damaged.
fn read_record(root: &Path, dir: &Path) -> anyhow::Result<Option<PinnedLayout>> {
    let pin = dir.join(PINNED_LAYOUT_MAP);
    let Some(data) = open_pinned(&pin)? else {
        return Ok(None);
    };
    let damaged = |what: &str| {
        format!(
            "the layout record {} is {what}: the pinned state cannot be trusted; {}",
            pin.display(),
            rebuild_advice(root)
        )
    };
    check_shape(&data, &LAYOUT_RECORD).map_err(|found| anyhow::anyhow!(damaged(&found)))?;
    let record = Array::<_, PinnedLayout>::try_from(Map::from_map_data(data)?)?
        .get(&0, 0)
        .with_context(|| format!("reading {}", pin.display()))?;
    if record.magic != PINNED_LAYOUT_MAGIC {
        bail!(damaged("not one netiso wrote (its magic is wrong)"));
    }
    if LayoutState::from_u32(record.state).is_none() || record.version == 0 {
        bail!(damaged(&format!(
            "corrupted (version {}, state {})",
            record.version, record.state
        )));
    }
    Ok(Some(record))
}

/// Opens the map pinned at `pin`; `None` if nothing is pinned there.
pub(super) fn open_pinned(pin: &Path) -> anyhow::Result<Option<MapData>> {
    // (Below a directory that does not exist, the kernel answers EPERM.)
    if !pin.exists() {
        return Ok(None);
    }
    match MapData::from_pin(pin) {
        Ok(map) => Ok(Some(map)),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("opening pinned map {}", pin.display())),
    }
}

/// Refuses a map of `version`'s layout that is missing or is not what that layout
/// pins under its name (aya would reuse it without looking).
fn check_map(root: &Path, map: &PinnedMap, version: u32) -> anyhow::Result<()> {
    let pin = root.join(map.name);
    let Some(data) = open_pinned(&pin)? else {
        bail!(
            "the pinned state under {} has layout {version} but lacks its map {}; {}",
            root.display(),
            map.name,
            rebuild_advice(root)
        );
    };
    if let Err(found) = check_shape(&data, map) {
        bail!(
            "pinned map {} is {found} where layout {version} has {}; {}",
            pin.display(),
            describe(map.kind, (map.key_size, map.value_size, map.max_entries)),
            rebuild_advice(root)
        );
    }
    Ok(())
}

/// Whether `data` has `map`'s type and shape; if not, what it is.
fn check_shape(data: &MapData, map: &PinnedMap) -> Result<(), String> {
    let info = data.info().map_err(|e| format!("unreadable ({e})"))?;
    let kind = info
        .map_type()
        .map_err(|e| format!("of an unknown type ({e})"))?;
    let shape = (info.key_size(), info.value_size(), info.max_entries());
    if kind == map.kind && shape == (map.key_size, map.value_size, map.max_entries) {
        Ok(())
    } else {
        Err(describe(kind, shape))
    }
}

fn describe(kind: MapType, (key, value, entries): (u32, u32, u32)) -> String {
    format!(
        "a map of type {kind:?} with {key}-byte keys, {value}-byte values and {entries} entries"
    )
}
