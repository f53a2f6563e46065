//! What a runtime hands the plugin: the network configuration on stdin and the
//! `CNI_*` environment, and the ports asked for in either.
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::error::{CniError, code};
use crate::{
    control::model::{Bandwidth, HostInfo},
    ports::{PortMapping, PortRange},
    tc::HtbConfig,
};

/// The spec versions the plugin speaks, oldest first (those of the reference plugins).
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The agent's control socket when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/netiso/api.sock";

/// The network configuration (one plugin's entry of a conflist, as libcni passes it).
#[derive(Debug, Default, Deserialize)]
pub struct NetworkConfig {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The agent's control socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Handed back in the result as it is.
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// Mesos's `network/cni` isolator puts its port mappings here.
    #[serde(default)]
    pub args: Option<Value>,
    /// GC: the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<ValidAttachment>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<RuntimePortMapping>,
    /// The runtime's names for the container, per network (podman).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Capability `bandwidth`.
    #[serde(default)]
    pub bandwidth: Option<BandwidthEntry>,
}

/// The `bandwidth` capability's entry: rates in bit/s, bursts in bits (0 or absent:
/// that direction keeps the agent's limit).
#[derive(Debug, Default, Deserialize)]
pub struct BandwidthEntry {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

impl BandwidthEntry {
    /// As the agent's limits, in bytes: a burst becomes htb's bucket at the rate.
    pub fn limits(&self) -> Bandwidth {
        let limit = |rate_bits: u64, burst_bits: u64| {
            (rate_bits >= 8).then(|| {
                let burst = (burst_bits >= 8).then_some(burst_bits / 8);
                HtbConfig {
                    rate: rate_bits / 8,
                    ceil: burst.map(|_| rate_bits / 8),
                    burst,
                }
            })
        };
        Bandwidth {
            egress: limit(self.egress_rate, self.egress_burst),
            ingress: limit(self.ingress_rate, self.ingress_burst),
        }
    }
}

/// One `portMappings` entry (capability `portMappings`).
#[derive(Debug, Deserialize)]
pub struct RuntimePortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetworkConfig {
    /// Parses stdin; the version must be one the plugin speaks.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let config: Self = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("the network configuration on stdin is not valid: {e}"),
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&config.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "CNI version '{}' is not supported; netiso speaks {}",
                    config.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if config.name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the network configuration has no name",
            ));
        }
        Ok(config)
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// Whether the configuration's version is at least `version` (both supported).
    pub fn version_at_least(&self, version: &str) -> bool {
        let index = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
        index(&self.cni_version) >= index(version)
    }

    /// Every port the container is to own, merged into ranges (`portMappings`,
    /// `NETISO_PORTS` in `CNI_ARGS`, and Mesos's `port_mappings`), and the host ports
    /// that reach another port inside. A mapping on an address that is not the
    /// host's is refused.
    pub fn ports(
        &self,
        cni_args: &CniArgs,
        host: &HostInfo,
    ) -> Result<(Vec<PortRange>, Vec<PortMapping>), CniError> {
        let mut ports = Vec::new();
        let mut mappings = Vec::new();
        let mut add = |host_port: u16, container_port: u16| {
            if host_port == 0 {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "a port mapping has no host port",
                ));
            }
            ports.push(host_port);
            if container_port != host_port && container_port != 0 {
                // One entry per protocol arrives for the same mapping.
                mappings.push(PortMapping {
                    host_port,
                    container_port,
                });
            }
            Ok(())
        };
        for mapping in &self.runtime_config.port_mappings {
            check_host_ip(&mapping.host_ip, host)?;
            add(mapping.host_port, mapping.container_port)?;
        }
        for mapping in self.mesos_port_mappings()? {
            add(mapping.host_port, mapping.container_port)?;
        }
        if let Some(text) = cni_args.get("NETISO_PORTS") {
            let ranges = crate::ports::parse_list(text).map_err(|e| {
                CniError::new(
                    code::INVALID_CONFIG,
                    format!("NETISO_PORTS in CNI_ARGS: {e:#}"),
                )
            })?;
            ports.extend(ranges.iter().flat_map(PortRange::ports));
        }
        mappings.sort_unstable();
        mappings.dedup();
        Ok((PortRange::merge(&ports), mappings))
    }

    fn mesos_port_mappings(&self) -> Result<Vec<MesosPortMapping>, CniError> {
        let Some(mappings) = self
            .args
            .as_ref()
            .and_then(|args| args.pointer("/org.apache.mesos/network_info/port_mappings"))
        else {
            return Ok(Vec::new());
        };
        serde_json::from_value(mappings.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("args.org.apache.mesos.network_info.port_mappings: {e}"),
            )
        })
    }

    /// The runtime's names for the container on this network.
    pub fn aliases(&self) -> Option<String> {
        let aliases = self.runtime_config.aliases.get(&self.name)?;
        (!aliases.is_empty()).then(|| aliases.join(","))
    }
}

#[derive(Debug, Deserialize)]
struct MesosPortMapping {
    host_port: u16,
    container_port: u16,
}

/// Containers share the host's addresses: a mapping can only be on one of them.
fn check_host_ip(host_ip: &str, host: &HostInfo) -> Result<(), CniError> {
    if host_ip.is_empty() {
        return Ok(());
    }
    let address: IpAddr = host_ip.parse().map_err(|_| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("hostIP '{host_ip}' is not an IP address"),
        )
    })?;
    let ours = address.is_unspecified()
        || Some(address) == host.ipv4.map(IpAddr::V4)
        || Some(address) == host.ipv6.map(IpAddr::V6);
    if ours {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "hostIP {host_ip} is not the host's address; netiso containers share {} (leave hostIP out)",
                [
                    host.ipv4.map(|a| a.to_string()),
                    host.ipv6.map(|a| a.to_string())
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ")
            ),
        ))
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by ';'.
#[derive(Debug, Default)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut args = BTreeMap::new();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("CNI_ARGS entry '{pair}' is not KEY=VALUE"),
                )
            })?;
            args.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self(args))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The arguments worth a label (the runtime's names for the container, its
    /// scheduler's ids): all but the plugin's own and `IgnoreUnknown`.
    pub fn labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "IgnoreUnknown" | "NETISO_PORTS"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn host() -> HostInfo {
        HostInfo {
            interface: "eth0".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            ipv6: Some("2001:db8::1".parse().unwrap()),
            gateway_ipv4: Ipv4Addr::new(169, 254, 1, 1),
            gateway_ipv6: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            container_device: crate::net::ContainerDevice::Veth,
            containers: 0,
        }
    }

    #[test]
    fn ports_from_every_source_are_merged_into_ranges() {
        let config = NetworkConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"netiso","type":"netiso",
                "runtimeConfig":{"portMappings":[
                    {"hostPort":31001,"containerPort":31001,"protocol":"tcp"},
                    {"hostPort":31001,"containerPort":31001,"protocol":"udp"},
                    {"hostPort":31002,"containerPort":31002,"protocol":"tcp","hostIP":"0.0.0.0"},
                    {"hostPort":31003,"containerPort":31003,"protocol":"tcp","hostIP":"198.18.0.1"}]},
                "args":{"org.apache.mesos":{"network_info":{"port_mappings":[
                    {"host_port":31200,"container_port":31200,"protocol":"tcp"}]}}}}"#,
        )
        .unwrap();
        let args = CniArgs::parse("IgnoreUnknown=1;NETISO_PORTS=31004-31010,31100").unwrap();
        let (ports, mappings) = config.ports(&args, &host()).unwrap();
        assert!(mappings.is_empty());
        let shown: Vec<String> = ports.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["31001-31010", "31100-31100", "31200-31200"]);
    }

    #[test]
    fn foreign_addresses_are_refused_and_translations_kept_once() {
        let with = |mapping: &str| {
            let text = format!(
                r#"{{"cniVersion":"1.0.0","name":"n","runtimeConfig":{{"portMappings":[{mapping}]}}}}"#
            );
            let config = NetworkConfig::parse(text.as_bytes()).unwrap();
            config
                .ports(&CniArgs::default(), &host())
                .map_err(|e| (e.code, e.msg))
        };
        let (ports, mappings) = with(
            r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
               {"hostPort":8080,"containerPort":80,"protocol":"udp"}"#,
        )
        .unwrap();
        assert_eq!(ports, [PortRange::new(8080, 8080).unwrap()]);
        assert_eq!(
            mappings,
            [PortMapping {
                host_port: 8080,
                container_port: 80
            }]
        );
        let (code, msg) =
            with(r#"{"hostPort":8080,"containerPort":8080,"hostIP":"127.0.0.1"}"#).unwrap_err();
        assert_eq!(code, code::INVALID_CONFIG);
        assert!(msg.contains("198.18.0.1 and 2001:db8::1"), "{msg}");
        assert!(with(r#"{"hostPort":8080,"containerPort":8080,"hostIP":"::"}"#).is_ok());
    }

    #[test]
    fn bandwidth_in_bits_becomes_limits_in_bytes() {
        let config = NetworkConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"bandwidth":
                {"ingressRate":800000,"ingressBurst":80000,"egressRate":1600000}}}"#,
        )
        .unwrap();
        let limits = config.runtime_config.bandwidth.unwrap().limits();
        let ingress = limits.ingress.unwrap();
        assert_eq!(
            (ingress.rate, ingress.ceil, ingress.burst),
            (100_000, Some(100_000), Some(10_000))
        );
        let egress = limits.egress.unwrap();
        assert_eq!(
            (egress.rate, egress.ceil, egress.burst),
            (200_000, None, None)
        );
        assert_eq!(BandwidthEntry::default().limits(), Bandwidth::default());
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let code = |stdin: &str| NetworkConfig::parse(stdin.as_bytes()).unwrap_err().code;
        assert_eq!(code("{"), code::DECODING_FAILURE);
        assert_eq!(
            code(r#"{"cniVersion":"9.9.9","name":"n"}"#),
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(code(r#"{"name":"n"}"#), code::INCOMPATIBLE_VERSION);
        assert_eq!(code(r#"{"cniVersion":"1.1.0"}"#), code::INVALID_CONFIG);
        assert_eq!(
            CniArgs::parse("A=1;B").unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
        let config = NetworkConfig::parse(br#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap();
        assert!(config.version_at_least("0.3.0"));
        assert!(!config.version_at_least("0.4.0"));
    }
}
