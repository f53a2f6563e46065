//! What the control API speaks: requests to create and update a container, and a
//! container as the API shows it and the state directory records it.
use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{net::container_network::HOST_VETH_PREFIX, ports::PortRange, tc::HtbConfig};

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
    pub host_veth: String,
    /// Whether the namespace was adopted (it outlives the container).
    pub adopted: bool,
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
}

impl ContainerInfo {
    /// The container's index in the datapath's maps, from its veth's name.
    pub fn slot(&self) -> Option<u32> {
        self.host_veth
            .strip_prefix(HOST_VETH_PREFIX)
            .and_then(|n| n.parse().ok())
    }
}
