//! What the control API speaks: requests to create and update a container, and a
//! container as the API shows it and the state directory records it.
use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    net::{ContainerDevice, container_network::HOST_VETH_PREFIX},
    ports::{PortMapping, PortRange},
    tc::HtbConfig,
};

/// What `container create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    /// Non-ephemeral ports, a subset of the agent's `ports` resource.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Adopt this network namespace instead of making one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Adopt the network namespace of this process.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// CPUs of the container, for rate limits per CPU.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// The name of the container's interface (default: the public interface's).
    #[serde(default)]
    pub interface: Option<String>,
    /// The CNI attachment this container is, when the CNI plugin made it.
    #[serde(default)]
    pub attachment: Option<CniAttachment>,
    /// Limits of its own, overriding the agent's rate flags for it.
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// Host ports (of `ports`) that reach another port inside the container.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// Limits a container asked for itself (CNI's `bandwidth` capability): a direction
/// given here overrides the agent's rate flags (and their CPU scaling) for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// What the container sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<HtbConfig>,
    /// What it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<HtbConfig>,
}

/// What identifies a CNI attachment: the network, the runtime's container id and the
/// interface name (CNI_CONTAINERID and CNI_IFNAME).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CniAttachment {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl CniAttachment {
    /// The agent's id for this attachment: "cni-", up to 12 characters of the runtime's
    /// container id (to recognise it), and a hash of the whole key (to tell apart
    /// networks, interfaces and ids that start alike). Stable across versions.
    pub fn agent_id(&self) -> String {
        use std::hash::Hasher as _;
        let mut hash = fnv::FnvHasher::default();
        for part in [&self.network, &self.container_id, &self.ifname] {
            hash.write(part.as_bytes());
            hash.write_u8(0);
        }
        let readable: String = self
            .container_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        format!("cni-{readable}-{:016x}", hash.finish())
    }
}

/// What containers are given of the host (`GET /v1/host`): what the CNI plugin
/// reports as the attachment's interfaces, addresses and routes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The public interface, whose name, MAC, MTU and addresses containers share.
    pub interface: String,
    pub mac: String,
    pub mtu: u32,
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// The link-local gateways containers route through.
    pub gateway_ipv4: std::net::Ipv4Addr,
    pub gateway_ipv6: std::net::Ipv6Addr,
    /// The kind of pair new containers get (`--container-device`).
    #[serde(default)]
    pub container_device: ContainerDevice,
    /// How many containers the agent has.
    pub containers: usize,
}

/// A MAC as `ip` prints it.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Most labels a container may have, and their sizes: labels go with every scrape.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_NAME: usize = 128;
pub const MAX_LABEL_VALUE: usize = 1024;

impl CreateRequest {
    /// Refuses labels too many or too large, naming the first.
    pub fn check_sizes(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "{} labels are too many; a container may have {MAX_LABELS}",
                self.labels.len()
            ));
        }
        for (name, value) in &self.labels {
            if name.len() > MAX_LABEL_NAME || value.len() > MAX_LABEL_VALUE {
                let shown: String = name.chars().take(32).collect();
                return Err(format!(
                    "label '{shown}' is too large: names may have {MAX_LABEL_NAME} bytes and values {MAX_LABEL_VALUE}"
                ));
            }
        }
        Ok(())
    }
}

/// What `container update` sends: the container's new non-ephemeral ports and/or its
/// new number of CPUs (absent: unchanged).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct UpdateRequest {
    #[serde(default)]
    pub ports: Option<Vec<PortRange>>,
    #[serde(default)]
    pub cpus: Option<f64>,
}

/// A container as the API shows it and the state directory records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Bind mount of its network namespace (`ip netns exec netiso-<id> …` works).
    pub netns: PathBuf,
    /// Inclusive, like Mesos's `net_ephemeral_ports`.
    pub ephemeral_ports: PortRange,
    pub ports: Vec<PortRange>,
    /// Host ports that reach another port inside (translated by the datapath).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// The host end of its pair of devices (named like this whatever its kind).
    pub host_veth: String,
    /// Its pair's kind (records from before netkit: veth).
    #[serde(default)]
    pub device: ContainerDevice,
    /// Whether the namespace was adopted (it outlives the container).
    pub adopted: bool,
    /// The container's interface (absent in records from before it could be chosen:
    /// the public interface's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The CNI attachment this container is, if the CNI plugin made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<CniAttachment>,
    /// Limits it asked for itself, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// The shaping of what the container sends (htb on its eth0), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_limit: Option<HtbConfig>,
    /// The shaping of what it receives (htb on the host end of its veth), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_limit: Option<HtbConfig>,
    /// Its own flow of the public interface's fq_codel (unique egress flows), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_flow: Option<u32>,
    /// An adopted namespace's sysctls as they were before netiso changed them; put
    /// back when the container is destroyed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous_sysctls: BTreeMap<String, String>,
}

impl ContainerInfo {
    /// The container's index in the datapath's maps, from its veth's name.
    pub fn slot(&self) -> Option<u32> {
        self.host_veth
            .strip_prefix(HOST_VETH_PREFIX)
            .and_then(|n| n.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_ids_are_valid_distinct_and_stable() {
        let attachment = |network: &str, id: &str, ifname: &str| CniAttachment {
            network: network.into(),
            container_id: id.into(),
            ifname: ifname.into(),
        };
        let podman = attachment("netiso", &"ab12".repeat(16), "eth0");
        let id = podman.agent_id();
        crate::net::container_network::check_id(&id).unwrap();
        // A change of hash would orphan every attachment made before it.
        assert_eq!(id, "cni-ab12ab12ab12-925406566d09045c");
        let others = [
            attachment("other", &"ab12".repeat(16), "eth0"),
            attachment("netiso", &"ab12".repeat(16), "eth1"),
            attachment("netiso", "default-web/1", "eth0"),
            attachment("netisoab12", &"ab12".repeat(16)[4..], "eth0"),
        ];
        for other in others {
            let other_id = other.agent_id();
            crate::net::container_network::check_id(&other_id).unwrap();
            assert_ne!(other_id, id);
        }
    }

    #[test]
    fn labels_are_bounded() {
        let mut request = CreateRequest::default();
        request.labels.insert("app".into(), "web".into());
        assert!(request.check_sizes().is_ok());
        request
            .labels
            .insert("big".into(), "x".repeat(MAX_LABEL_VALUE + 1));
        assert_eq!(
            request.check_sizes().unwrap_err(),
            "label 'big' is too large: names may have 128 bytes and values 1024"
        );
        let many = (0..=MAX_LABELS).map(|i| (format!("l{i}"), String::new()));
        request.labels = many.collect();
        assert!(request.check_sizes().unwrap_err().contains("are too many"));
    }
}
