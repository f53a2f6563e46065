//! The layout table the agent checks pinned maps against (and upgrades from) is the
//! object's own: every map, with its type, key, value and size.
use std::collections::BTreeSet;

use aya::maps::MapData;
use netiso::datapath::layout::current_maps;

use crate::fixtures::{DatapathLogLevel, EBPF_OBJECT, loader};

/// Removes a pin directory, even after a failed assertion.
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_current_layout_lists_every_map_of_the_object_as_the_kernel_sees_it() {
    let dir = PinDir(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/netiso-layout-test-{}",
        std::process::id()
    )));
    netiso::datapath::bpffs::prepare_pin_root(&dir.0).expect("creating a pin directory");
    let layout = current_maps();
    let mut loader = loader(DatapathLogLevel::Off);
    for map in &layout {
        loader.map_pin_path(map.name, dir.0.join(map.name));
    }
    let ebpf = loader.load(EBPF_OBJECT).expect("loading the object");
    let in_object: BTreeSet<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with('.'))
        .collect();
    let listed: BTreeSet<&str> = layout.iter().map(|m| m.name).collect();
    assert_eq!(in_object, listed, "the object's maps and the layout's");
    for map in &layout {
        let info = MapData::from_pin(dir.0.join(map.name))
            .and_then(|data| data.info())
            .unwrap_or_else(|e| panic!("{}: {e}", map.name));
        assert_eq!(info.map_type().unwrap(), map.kind, "{}", map.name);
        assert_eq!(
            (info.key_size(), info.value_size(), info.max_entries()),
            (map.key_size, map.value_size, map.max_entries),
            "{}",
            map.name
        );
    }
}
