//! Published ports whose container port differs from the host port (`-p 8080:80`):
//! the host port is the container's like any other; the datapath translates between
//! the two (`netiso-ebpf/src/translate.rs`).
use serde::{Deserialize, Serialize};

use super::PortRange;
use crate::failure::refuse;

/// Host port `host_port` (which the container owns) reaches the container's
/// `container_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
}

/// Refuses mappings the datapath could not translate without ambiguity: each host
/// port among the container's `ports`, at most one mapping per host port and per
/// container port, and container ports that are none of the container's own (its
/// ports and its `ephemeral` range), whose packets must pass untranslated.
pub fn check_mappings(
    mappings: &[PortMapping],
    ports: &[PortRange],
    ephemeral: Option<PortRange>,
) -> anyhow::Result<()> {
    for (index, mapping) in mappings.iter().enumerate() {
        let PortMapping {
            host_port,
            container_port,
        } = *mapping;
        if container_port == 0 || host_port == container_port {
            refuse!(
                Invalid,
                "port mapping {host_port} -> {container_port}: the container port must be another port than the host port, not 0"
            );
        }
        if !ports.iter().any(|r| r.contains(host_port)) {
            refuse!(
                Invalid,
                "port mapping {host_port} -> {container_port}: host port {host_port} must be one of the container's ports"
            );
        }
        let owned = ports
            .iter()
            .chain(&ephemeral)
            .any(|r| r.contains(container_port));
        if owned {
            refuse!(
                Conflict,
                "port mapping {host_port} -> {container_port}: {container_port} is also one of the container's own ports; publish a port it does not own"
            );
        }
        let earlier = &mappings[..index];
        if earlier.iter().any(|m| m.host_port == host_port) {
            refuse!(Invalid, "host port {host_port} is mapped twice");
        }
        if earlier.iter().any(|m| m.container_port == container_port) {
            refuse!(
                Invalid,
                "container port {container_port} is published on two host ports"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
        }
    }

    #[test]
    fn ambiguous_mappings_are_refused() {
        let ports = [PortRange::new(31000, 31009).unwrap()];
        let ephemeral = Some(PortRange::new(32768, 32783).unwrap());
        let check = |mappings: &[PortMapping]| {
            check_mappings(mappings, &ports, ephemeral).map_err(|e| e.to_string())
        };
        assert!(check(&[mapping(31000, 80), mapping(31001, 443)]).is_ok());
        let refused = [
            (vec![mapping(31000, 31000)], "another port"),
            (vec![mapping(31000, 0)], "not 0"),
            (
                vec![mapping(8080, 80)],
                "must be one of the container's ports",
            ),
            (
                vec![mapping(31000, 31005)],
                "also one of the container's own",
            ),
            (
                vec![mapping(31000, 32770)],
                "also one of the container's own",
            ),
            (vec![mapping(31000, 80), mapping(31000, 81)], "mapped twice"),
            (
                vec![mapping(31000, 80), mapping(31001, 80)],
                "two host ports",
            ),
        ];
        for (mappings, expected) in refused {
            let error = check(&mappings).unwrap_err();
            assert!(error.contains(expected), "{mappings:?}: {error}");
        }
    }
}
