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
