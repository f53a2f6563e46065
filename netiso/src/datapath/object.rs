//! The eBPF object: its bytes, and loading it with every map of the current layout
//! pinned in a directory (see [`super::layout`]).
use std::path::Path;

use anyhow::{Context as _, bail};
use aya::{Ebpf, EbpfLoader};
use netiso_common::{CONTAINER_SLOT_GLOBAL, MAX_CONTAINERS, PUBLIC_MTU_GLOBAL};

use super::layout;

/// The eBPF object built from `netiso-ebpf` by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netiso"));

/// Fails unless this binary carries the eBPF object.
pub(super) fn check_has_programs() -> anyhow::Result<()> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this netiso binary was built with AYA_BUILD_SKIP=1 and has no eBPF programs; rebuild it without that variable"
        );
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

/// Loads the object with every map taken from (or pinned to) `maps_dir`, telling its
/// programs the public interface's MTU.
pub(super) fn load(
    maps_dir: &Path,
    log_level: DatapathLogLevel,
    public_mtu: u32,
) -> anyhow::Result<Ebpf> {
    // (The loader reads the kernel's BTF itself, where there is one.)
    let mut loader = loader(log_level);
    // The loader borrows the value for as long as it lives: four bytes per load.
    let public_mtu: &'static u32 = Box::leak(Box::new(public_mtu));
    loader.override_global(PUBLIC_MTU_GLOBAL, public_mtu, true);
    for map in layout::current_maps() {
        loader.map_pin_path(map.name, maps_dir.join(map.name));
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
    pub(super) fn new(maps_dir: &Path, log_level: DatapathLogLevel) -> Self {
        let mut loader = loader(log_level);
        loader.btf(None);
        for map in layout::current_maps() {
            loader.map_pin_path(map.name, maps_dir.join(map.name));
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
