//! Everything a lab's agent holds in the kernel and on disk, so that a test can say
//! that it holds what its live containers need and nothing more: veths, namespaces
//! and their bind mounts, records, port map, veth map and namespace map entries, port
//! translations, pinned links.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, Map, MapData};
use netiso_common::{
    CONTAINER_NETNS_MAP, CONTAINER_PORT_TRANSLATIONS_MAP, ContainerLoopback, ContainerPort,
    PORT_OWNERS_MAP, PORT_TRANSLATIONS_MAP, PortOwner, VETH_CONTAINERS_MAP,
};

use crate::{lab::Lab, test_run::kernel_has_shared_loopback};

/// The ports a lab agent hands out (its `ports` and ephemeral pool), where leaked
/// port map entries would be.
const LAB_PORTS: std::ops::RangeInclusive<u16> = 30001..=32000;
/// The agent's own pinned links (public ingress and egress, host loopback).
const AGENT_LINKS: usize = 3;

/// What a lab's agent holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Holdings {
    /// `netiso<slot>` links in the lab's host namespace.
    pub veths: BTreeSet<String>,
    /// Names under /run/netns of the lab's containers (`netiso-<container id>`).
    pub namespaces: BTreeSet<String>,
    /// Mount points of those names.
    pub mounts: BTreeSet<String>,
    /// Files in the state directory's `containers/`.
    pub records: BTreeSet<String>,
    /// Port map entries in the lab's port ranges: slot → how many ports.
    pub port_slots: BTreeMap<u32, usize>,
    /// Veth map entries: slots.
    pub veth_slots: BTreeSet<u32>,
    /// Published ports' translations in the lab's port ranges, inbound (host port,
    /// container port) and outbound (slot, container port, host port).
    pub translations_in: BTreeSet<(u16, u16)>,
    pub translations_out: BTreeSet<(u32, u16, u16)>,
    /// Pinned links beyond the agent's own (containers' devices have netlink
    /// filters, which go with the devices).
    pub container_links: usize,
    /// Namespace map entries (for the shared loopback program): slots.
    pub netns_slots: BTreeSet<u32>,
}

impl Holdings {
    /// What the lab's agent holds now.
    pub fn of(lab: &Lab) -> Self {
        // Container ids are `lab-<lab id>-<name>`, so their namespaces share the
        // prefix of the lab's own, which are not the agent's; CNI attachments' ids
        // start with the lab's CNI container ids.
        let prefix = format!("netiso-lab-{}-", lab.id);
        let cni_prefix = lab.cni_namespace_prefix();
        let runtimes = lab.runtime_netns_prefix();
        let agents = |name: &str| {
            (name.starts_with(&prefix) && !name.starts_with(&runtimes))
                || name.starts_with(&cni_prefix)
        };
        let lab_own: Vec<&str> = [Some(&lab.host), Some(&lab.remote), lab.far.as_ref()]
            .into_iter()
            .flatten()
            .map(crate::netns::Netns::name)
            .collect();
        let links = lab.host.exec(&["ip", "-o", "link", "show"]);
        let veths = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .filter(|name| name.starts_with("netiso"))
            .collect();
        let namespaces = fs::read_dir("/run/netns")
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| agents(n) && !lab_own.contains(&n.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|point| point.strip_prefix("/run/netns/").is_some_and(agents))
            .filter(|point| {
                !lab_own
                    .iter()
                    .any(|own| point.ends_with(&format!("/{own}")))
            })
            .map(str::to_owned)
            .collect();
        let records = fs::read_dir(lab.state_dir().join("containers"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut port_slots = BTreeMap::new();
        let owners = pinned(lab, PORT_OWNERS_MAP).map(|map| {
            Array::<_, PortOwner>::try_from(Map::Array(map)).expect("the port map is an array")
        });
        if let Some(owners) = owners {
            for port in LAB_PORTS {
                let owner = owners
                    .get(&u32::from(port), 0)
                    .expect("reading the port map");
                if let Some(slot) = owner.container.checked_sub(1) {
                    *port_slots.entry(slot).or_insert(0) += 1;
                }
            }
        }
        let veth_slots = pinned(lab, VETH_CONTAINERS_MAP)
            .map(|map| {
                HashMap::<_, u32, u32>::try_from(Map::HashMap(map))
                    .expect("the veth map is a hash map")
                    .iter()
                    .filter_map(Result::ok)
                    .map(|(_, slot)| slot)
                    .collect()
            })
            .unwrap_or_default();
        let translations_in = pinned(lab, PORT_TRANSLATIONS_MAP)
            .map(|map| {
                let inbound = Array::<_, u16>::try_from(Map::Array(map))
                    .expect("the translation map is an array");
                LAB_PORTS
                    .filter_map(|port| {
                        let inside = inbound.get(&u32::from(port), 0).ok()?;
                        (inside != 0).then_some((port, inside))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let translations_out = pinned(lab, CONTAINER_PORT_TRANSLATIONS_MAP)
            .map(|map| {
                HashMap::<_, ContainerPort, u16>::try_from(Map::HashMap(map))
                    .expect("the translation map is a hash map")
                    .iter()
                    .filter_map(Result::ok)
                    .map(|(key, host_port)| (key.slot, key.port, host_port))
                    .collect()
            })
            .unwrap_or_default();
        let container_links = fs::read_dir(lab.pin_root().join("links"))
            .map_or(0, |dir| dir.count().saturating_sub(AGENT_LINKS));
        let netns_slots = pinned(lab, CONTAINER_NETNS_MAP)
            .map(|map| {
                HashMap::<_, u64, ContainerLoopback>::try_from(Map::HashMap(map))
                    .expect("the namespace map is a hash map")
                    .iter()
                    .filter_map(Result::ok)
                    .map(|(_, entry)| entry.slot)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            veths,
            namespaces,
            mounts,
            records,
            port_slots,
            veth_slots,
            translations_in,
            translations_out,
            container_links,
            netns_slots,
        }
    }

    /// What an agent whose containers are `containers` (the control API's list)
    /// should hold.
    pub fn expected(containers: &serde_json::Value) -> Self {
        let containers = containers.as_array().cloned().unwrap_or_default();
        let text = |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or("").to_owned();
        let slot = |c: &serde_json::Value| {
            text(c, "host_veth")
                .trim_start_matches("netiso")
                .parse::<u32>()
                .expect("a netiso<slot> veth")
        };
        let ports = |c: &serde_json::Value| {
            let ranges = c["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain([c["ephemeral_ports"].clone()]);
            ranges
                .map(|r| {
                    let (begin, end) = (r["begin"].as_u64().unwrap(), r["end"].as_u64().unwrap());
                    usize::try_from(end - begin + 1).unwrap()
                })
                .sum::<usize>()
        };
        let namespaces: BTreeSet<String> = containers
            .iter()
            .map(|c| format!("netiso-{}", text(c, "id")))
            .collect();
        let port = |v: &serde_json::Value| u16::try_from(v.as_u64().unwrap()).unwrap();
        let mappings: Vec<(u32, u16, u16)> = containers
            .iter()
            .flat_map(|c| {
                let mappings = c["port_mappings"].as_array().cloned().unwrap_or_default();
                let slot = slot(c);
                mappings
                    .into_iter()
                    .map(move |m| (slot, port(&m["container_port"]), port(&m["host_port"])))
            })
            .collect();
        Self {
            veths: containers.iter().map(|c| text(c, "host_veth")).collect(),
            mounts: namespaces
                .iter()
                .map(|n| format!("/run/netns/{n}"))
                .collect(),
            namespaces,
            records: containers
                .iter()
                .map(|c| format!("{}.json", text(c, "id")))
                .collect(),
            port_slots: containers.iter().map(|c| (slot(c), ports(c))).collect(),
            veth_slots: containers.iter().map(slot).collect(),
            translations_in: mappings
                .iter()
                .map(|&(_, inside, host)| (host, inside))
                .collect(),
            translations_out: mappings.into_iter().collect(),
            container_links: 0,
            netns_slots: if kernel_has_shared_loopback() {
                containers.iter().map(slot).collect()
            } else {
                BTreeSet::new()
            },
        }
    }
}

fn pinned(lab: &Lab, name: &str) -> Option<MapData> {
    MapData::from_pin(lab.pin_root().join(name)).ok()
}

/// Asserts that the lab's agent holds exactly what its live containers (as
/// `container list` shows them) need; `context` says when.
pub fn assert_holds_only_live_containers(lab: &Lab, containers: &serde_json::Value, context: &str) {
    let expected = Holdings::expected(containers);
    // Destroyed containers' veth pairs are deleted in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Holdings::of(lab);
    while held != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        held = Holdings::of(lab);
    }
    assert_eq!(held, expected, "{context}: held (left) vs needed (right)");
}
