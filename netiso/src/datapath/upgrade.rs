//! Upgrading pinned state of an older layout in place, while its programs keep
//! serving. The new maps are built in a directory of their own beside the old ones and
//! filled from the agent's records (recovery gives every container its entries, as
//! after any restart) and from the old maps; only then is every attachment swapped to
//! the new programs, each atomically (a tcx link update, or a netlink filter replaced
//! at netiso's priority), so no packet meets a missing or half-filled map. The
//! counters the old programs kept counting until their swap are then added to the new
//! ones, and the new pins replace the old. An upgrade that stops before its swap is
//! done is begun again from the old state; one that stops after it only moves its
//! pins in (see [`super::layout::Found::Swapped`]).
use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Pod,
    maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues},
};
use netiso_common::{
    CONTAINER_COUNTERS_MAP, ContainerCounters, ECHO_OWNERS_MAP, EchoConversation, EchoKey,
    LAYOUT_VERSION, MAX_CONTAINERS, PINNED_LAYOUT_MAP, PUBLIC_IFACE_COUNTER_SLOTS,
    PUBLIC_IFACE_COUNTERS_MAP, TrafficCounters,
};

use super::{
    layout::{self, UPGRADE_DIR, open_pinned},
    maps::DatapathMaps,
};
use crate::net::container_network::ContainerNetwork;

/// An attachment that waits for the new state to be whole.
pub(super) enum Deferred {
    /// The public interface's two programs.
    PublicIface(String),
    HostLo(String),
    /// A container's programs on its veth, eth0 and lo.
    Container(Box<ContainerNetwork>),
}

/// The old state's maps whose contents the new state takes over; everything else is
/// rebuilt from the agent's records and flags. (Layout 1's counters and echo
/// conversations have the current types; a layout that changes them converts here.)
struct OldState {
    container_counters: PerCpuArray<MapData, ContainerCounters>,
    public_iface_counters: PerCpuArray<MapData, TrafficCounters>,
    echo_owners: HashMap<MapData, EchoKey, EchoConversation>,
}

impl OldState {
    fn open(root: &Path) -> anyhow::Result<Self> {
        let open = |name: &str| -> anyhow::Result<Map> {
            let pin = root.join(name);
            let data = open_pinned(&pin)?
                .with_context(|| format!("pinned map {} vanished", pin.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Ok(Self {
            container_counters: PerCpuArray::try_from(open(CONTAINER_COUNTERS_MAP)?)?,
            public_iface_counters: PerCpuArray::try_from(open(PUBLIC_IFACE_COUNTERS_MAP)?)?,
            echo_owners: HashMap::try_from(open(ECHO_OWNERS_MAP)?)?,
        })
    }
}

/// An upgrade under way.
pub(super) struct Upgrade {
    from: u32,
    staging: PathBuf,
    old: OldState,
    pub(super) deferred: Vec<Deferred>,
    started: Instant,
}

/// What an upgrade did, for the agent's log.
#[derive(Clone, Copy, Debug)]
pub struct UpgradeReport {
    pub from: u32,
    pub to: u32,
    /// Containers whose programs were swapped (besides the public interface's and
    /// the host lo's).
    pub containers: usize,
    /// Container slots whose counters were carried over.
    pub counters_carried: usize,
    pub echo_conversations: usize,
    pub took: Duration,
}

impl Upgrade {
    /// Starts an upgrade of the layout-`from` state under `root`: an empty directory
    /// for the new maps (an interrupted upgrade's is removed first, and the upgrade
    /// begun again: the old state is still whole and in use), and the old maps to
    /// carry over.
    pub(super) fn begin(root: &Path, from: u32) -> anyhow::Result<Self> {
        remove_stale(root)?;
        let staging = root.join(UPGRADE_DIR);
        let old = OldState::open(root)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        log::info!(
            "the pinned state under {} has layout {from}: upgrading it in place to layout {LAYOUT_VERSION}",
            root.display()
        );
        Ok(Self {
            from,
            staging,
            old,
            deferred: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Where the new maps are pinned until the upgrade is done.
    pub(super) fn staging(&self) -> &Path {
        &self.staging
    }

    /// Copies the echo conversations containers have open, just before the swap, so
    /// that their replies keep finding them.
    pub(super) fn copy_echo_conversations(&self) -> anyhow::Result<usize> {
        let pin = self.staging.join(ECHO_OWNERS_MAP);
        let data = open_pinned(&pin)?.with_context(|| format!("{} is missing", pin.display()))?;
        let mut new: HashMap<_, EchoKey, EchoConversation> =
            HashMap::try_from(Map::from_map_data(data)?)?;
        let mut copied = 0;
        for entry in &self.old.echo_owners {
            // One that expired meanwhile is simply gone.
            let Ok((key, conversation)) = entry else {
                continue;
            };
            new.insert(key, conversation, 0)?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Adds what the old programs counted, to their swap, to the new counters: every
    /// container slot and public interface slot, CPU by CPU. Returns how many
    /// container slots had counts.
    pub(super) fn carry_counters(&self, new: &mut DatapathMaps) -> anyhow::Result<usize> {
        let mut carried = 0;
        for slot in 0..MAX_CONTAINERS {
            if add_per_cpu(
                &self.old.container_counters,
                &mut new.container_counters,
                slot,
                ContainerCounters::add,
            )? {
                carried += 1;
            }
        }
        for slot in 0..PUBLIC_IFACE_COUNTER_SLOTS {
            add_per_cpu(
                &self.old.public_iface_counters,
                &mut new.public_iface_counters,
                slot,
                |a, b| TrafficCounters {
                    packets: a.packets + b.packets,
                    bytes: a.bytes + b.bytes,
                },
            )?;
        }
        Ok(carried)
    }

    pub(super) fn report(
        &self,
        containers: usize,
        counters_carried: usize,
        echo_conversations: usize,
    ) -> UpgradeReport {
        UpgradeReport {
            from: self.from,
            to: LAYOUT_VERSION,
            containers,
            counters_carried,
            echo_conversations,
            took: self.started.elapsed(),
        }
    }
}

/// Adds `old`'s values of `slot` to `new`'s, CPU by CPU; whether there was anything.
fn add_per_cpu<T: Pod + Default + PartialEq>(
    old: &PerCpuArray<MapData, T>,
    new: &mut PerCpuArray<MapData, T>,
    slot: u32,
    add: fn(T, T) -> T,
) -> anyhow::Result<bool> {
    let old_values = old.get(&slot, 0)?;
    if old_values.iter().all(|value| *value == T::default()) {
        return Ok(false);
    }
    let new_values = new.get(&slot, 0)?;
    let sums: Vec<T> = old_values
        .iter()
        .zip(new_values.iter())
        .map(|(old, new)| add(*old, *new))
        .collect();
    new.set(slot, PerCpuValues::try_from(sums)?, 0)?;
    Ok(true)
}

/// Removes what an upgrade that never reached its swap left under `root` (the state
/// in use is whole without it).
pub(super) fn remove_stale(root: &Path) -> anyhow::Result<()> {
    let staging = root.join(UPGRADE_DIR);
    if staging.exists() {
        log::warn!(
            "removing {}, left by an upgrade that stopped before its swap",
            staging.display()
        );
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    Ok(())
}

/// Moves an upgrade's maps from its directory into `root`, each replacing the old
/// map of its name at once (a rename), the layout record last; removes what only older
/// layouts pinned, then the upgrade's directory. Run again after an interruption, it
/// moves what is left.
pub(super) fn move_in(root: &Path) -> anyhow::Result<()> {
    let staging = root.join(UPGRADE_DIR);
    let mut names: Vec<&str> = layout::current_maps().iter().map(|m| m.name).collect();
    names.sort_by_key(|name| *name == PINNED_LAYOUT_MAP);
    for name in &names {
        let from = staging.join(name);
        if from.exists() {
            let to = root.join(name);
            fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    for version in 1..LAYOUT_VERSION {
        for map in layout::maps_of(version).unwrap_or_default() {
            let pin = root.join(map.name);
            if !names.contains(&map.name) && pin.exists() {
                fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            }
        }
    }
    fs::remove_dir(&staging).with_context(|| format!("removing {}", staging.display()))
}
