//! The result of ADD, in the shape of the configuration's `cniVersion`: 0.1.0 and
//! 0.2.0 have `ip4`/`ip6` (what Mesos reads); 0.3.x and 0.4.0 have `interfaces`,
//! `ips` with a `version` and `routes`; 1.x the same without `version`.
use std::path::Path;

use serde_json::{Value, json};

use crate::control::model::{ContainerInfo, HostInfo, format_mac};
use crate::net::container_network::host_veth_mac;

/// What ADD made, as the runtime is told.
pub struct Attachment<'a> {
    pub container: &'a ContainerInfo,
    pub host: &'a HostInfo,
    pub ifname: &'a str,
    /// CNI_NETNS, which the runtime names the sandbox by.
    pub netns: &'a Path,
}

/// The result for `version`, with `dns` from the configuration.
pub fn result(attachment: &Attachment, version: &str, dns: Option<&Value>) -> Value {
    let host = attachment.host;
    // Containers share the host's addresses as /32 and /128, behind a link-local
    // gateway (the host end of their veth answers for it).
    let families = [
        host.ipv4.map(|a| {
            (
                "4",
                format!("{a}/32"),
                host.gateway_ipv4.to_string(),
                "0.0.0.0/0",
            )
        }),
        host.ipv6.map(|a| {
            (
                "6",
                format!("{a}/128"),
                host.gateway_ipv6.to_string(),
                "::/0",
            )
        }),
    ];
    let families: Vec<_> = families.into_iter().flatten().collect();
    let dns = dns.cloned().unwrap_or_else(|| json!({}));
    if matches!(version, "0.1.0" | "0.2.0") {
        let mut result = json!({ "cniVersion": version, "dns": dns });
        for (family, address, gateway, default) in &families {
            result[format!("ip{family}")] = json!({
                "ip": address,
                "gateway": gateway,
                "routes": [{ "dst": default, "gw": gateway }],
            });
        }
        return result;
    }
    let with_version = matches!(version, "0.3.0" | "0.3.1" | "0.4.0");
    let host_veth_mac = attachment
        .container
        .slot()
        .map(|slot| format_mac(host_veth_mac(slot)))
        .unwrap_or_default();
    let ips: Vec<Value> = families
        .iter()
        .map(|(family, address, gateway, _)| {
            let mut ip = json!({ "address": address, "gateway": gateway, "interface": 1 });
            if with_version {
                ip["version"] = json!(family);
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = families
        .iter()
        .map(|(_, _, gateway, default)| json!({ "dst": default, "gw": gateway }))
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [
            { "name": attachment.container.host_veth, "mac": host_veth_mac },
            {
                "name": attachment.ifname,
                "mac": host.mac,
                "sandbox": attachment.netns,
            },
        ],
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}
