//! Reading the datapath's counters: per container, and per direction and traffic
//! class on the public interface, summed over CPUs.
use std::{borrow::Borrow, path::Path};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Map, MapData, PerCpuArray},
};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, ContainerCounters, Direction, PUBLIC_IFACE_COUNTER_SLOTS,
    PUBLIC_IFACE_COUNTERS_MAP, TrafficClass, TrafficCounters, public_iface_counter_slot,
};

/// Reads and sums the per-CPU counters of container `slot`.
pub fn read_container_counters<T: Borrow<MapData>>(
    map: &PerCpuArray<T, ContainerCounters>,
    slot: u32,
) -> anyhow::Result<ContainerCounters> {
    let per_cpu = map.get(&slot, 0)?;
    Ok(per_cpu
        .iter()
        .fold(ContainerCounters::default(), |sum, c| sum.add(*c)))
}

/// Opens the pinned container counters under `pin_root`, as the statistics do.
pub fn open_container_counters(
    pin_root: &Path,
) -> anyhow::Result<PerCpuArray<MapData, ContainerCounters>> {
    let pin = pin_root.join(CONTAINER_COUNTERS_MAP);
    let map_data =
        MapData::from_pin(&pin).with_context(|| format!("opening pinned map {}", pin.display()))?;
    Ok(PerCpuArray::try_from(Map::from_map_data(map_data)?)?)
}

/// Reads a container's counters from the pinned map under `pin_root`.
pub fn read_pinned_container_counters(
    pin_root: &Path,
    slot: u32,
) -> anyhow::Result<ContainerCounters> {
    read_container_counters(&open_container_counters(pin_root)?, slot)
}

/// Totals of what crossed the public interface, per direction and traffic class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicIfaceCounters {
    slots: Vec<TrafficCounters>,
}

impl PublicIfaceCounters {
    /// Reads a pinned counter map, as an operator's tool or a test would.
    pub fn read_pinned(pin: &Path) -> anyhow::Result<Self> {
        let map_data = MapData::from_pin(pin)
            .with_context(|| format!("opening pinned map {}", pin.display()))?;
        let map = Map::from_map_data(map_data)?;
        Self::read(&PerCpuArray::try_from(map)?)
    }

    /// Reads the counter map of a loaded object (pinned or not), as test runs do.
    pub fn read_loaded(ebpf: &Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .map(PUBLIC_IFACE_COUNTERS_MAP)
            .context("public interface counter map missing from the eBPF object")?;
        Self::read(&PerCpuArray::try_from(map)?)
    }

    /// Reads a typed handle of the map.
    pub fn read<T: Borrow<MapData>>(map: &PerCpuArray<T, TrafficCounters>) -> anyhow::Result<Self> {
        let slots = (0..PUBLIC_IFACE_COUNTER_SLOTS)
            .map(|slot| {
                let per_cpu = map.get(&slot, 0)?;
                Ok(per_cpu
                    .iter()
                    .fold(TrafficCounters::default(), |sum, c| TrafficCounters {
                        packets: sum.packets + c.packets,
                        bytes: sum.bytes + c.bytes,
                    }))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { slots })
    }

    /// The counters of one direction and class.
    pub fn get(&self, direction: Direction, class: TrafficClass) -> TrafficCounters {
        self.slots
            .get(public_iface_counter_slot(direction, class) as usize)
            .copied()
            .unwrap_or_default()
    }
}
