//! The version of the state the agent pins under its bpffs root (maps and links),
//! recorded in a map of its own beside them so that a newer agent can upgrade it in
//! place and an older one can refuse it. docs/datapath.md lists the versions.

/// Name of the one-entry array that records the layout of the pinned state.
pub const PINNED_LAYOUT_MAP: &str = "NETISO_LAYOUT";

/// The layout this build pins. Raise it whenever a pinned map changes its type, key,
/// value or size, or one is added or removed, and teach the upgrade the old one.
///
/// 1: netiso 0.1.0, which pinned no version. 2: the version map itself. 3: the table
/// of containers' connections to their own published host ports.
pub const LAYOUT_VERSION: u32 = 3;

/// What [`PinnedLayout::magic`] holds, so that a map of the right name and shape that
/// netiso did not write is not taken for its record.
pub const PINNED_LAYOUT_MAGIC: [u8; 8] = *b"netiso\0\x01";

/// The state's layout and how far an upgrade to it has come. Entry 0 of
/// [`PINNED_LAYOUT_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinnedLayout {
    pub magic: [u8; 8],
    /// The layout version of every map and link pinned beside it.
    pub version: u32,
    /// A [`LayoutState`] as a number.
    pub state: u32,
}

#[cfg(feature = "user")]
// SAFETY: bytes and two u32s: 16 bytes, no padding.
unsafe impl aya::Pod for PinnedLayout {}

impl PinnedLayout {
    pub const fn new(state: LayoutState) -> Self {
        Self {
            magic: PINNED_LAYOUT_MAGIC,
            version: LAYOUT_VERSION,
            state: state as u32,
        }
    }
}

/// Where pinned state of a layout stands.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutState {
    /// In use: the programs attached read and write these maps.
    Ready = 1,
    /// Being filled by an upgrade, beside the older state the programs still use.
    Filling = 2,
    /// Every attachment runs on it and the counters are carried over; only the older
    /// state's pins remain to be replaced by these.
    Swapped = 3,
}

impl LayoutState {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Ready),
            2 => Some(Self::Filling),
            3 => Some(Self::Swapped),
            _ => None,
        }
    }
}
