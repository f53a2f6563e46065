//! Which pair of devices joins a container to the host: a veth pair everywhere, or a
//! netkit pair (Linux 6.7 and later), whose container end runs netiso's program in
//! its own transmit path and hands what the container sends on without a hop through
//! the host end's receive backlog. Chosen once at start (`--container-device`); a
//! container keeps the kind it was made with until it is made again.
use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{NetlinkSocket, PairEnd, netns};
use crate::failure::refuse;

/// The kind of a container's pair of devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerDevice {
    #[default]
    Veth,
    Netkit,
}

impl ContainerDevice {
    /// The kind of the link whose kind (`IFLA_INFO_KIND`) is `kind`.
    pub fn of_link_kind(kind: &str) -> Option<Self> {
        match kind {
            "veth" => Some(Self::Veth),
            "netkit" => Some(Self::Netkit),
            _ => None,
        }
    }
}

impl fmt::Display for ContainerDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Veth => "veth",
            Self::Netkit => "netkit",
        })
    }
}

/// What `--container-device` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerDeviceChoice {
    /// netkit where the kernel has it, veth elsewhere.
    #[default]
    Auto,
    /// veth pairs, on every kernel.
    Veth,
    /// netkit pairs; the agent refuses to start on a kernel without netkit.
    Netkit,
}

impl ContainerDeviceChoice {
    /// The kind new containers get on this kernel (`netkit`: whether it has netkit).
    pub fn resolve(self, netkit: Result<(), String>) -> anyhow::Result<ContainerDevice> {
        match (self, netkit) {
            (Self::Veth, _) => Ok(ContainerDevice::Veth),
            (Self::Auto | Self::Netkit, Ok(())) => Ok(ContainerDevice::Netkit),
            (Self::Auto, Err(_)) => Ok(ContainerDevice::Veth),
            (Self::Netkit, Err(why)) => refuse!(
                Invalid,
                "--container-device=netkit: this kernel cannot make netkit devices ({why}); netkit needs Linux 6.7 or later built with CONFIG_NETKIT: use --container-device=auto or veth"
            ),
        }
    }
}

/// Whether this kernel makes netkit pairs: one is made in a namespace of the probe's
/// own (`netiso-probe-<pid>-netkit`), which is deleted with it. `Err` says why not.
pub fn probe_netkit() -> Result<(), String> {
    let name = format!("netiso-probe-{}-netkit", std::process::id());
    let probed = (|| -> anyhow::Result<()> {
        let netns = netns::create_named(&name)?;
        let file =
            std::fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
        netns::run_in(&netns, || -> anyhow::Result<()> {
            let end = |name, last| PairEnd {
                name,
                mac: [0x02, 0x6e, 0x69, 0xff, 0xfe, last],
                mtu: 1500,
            };
            NetlinkSocket::route()
                .context("opening a netlink socket")?
                .create_pair(
                    ContainerDevice::Netkit,
                    &end("probe0", 1),
                    &end("probe1", 2),
                    &file,
                )
        })?
    })();
    let _ = netns::delete_named(&name);
    probed.map_err(|error| {
        let unknown_kind = error.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|errno| errno == libc::EOPNOTSUPP || errno == libc::EINVAL)
        });
        if unknown_kind {
            "the kernel does not know the netkit device kind".to_owned()
        } else {
            format!("{error:#}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_netkit_where_the_kernel_has_it() {
        let none = || Err("no netkit".to_owned());
        let choice = ContainerDeviceChoice::Auto;
        assert_eq!(choice.resolve(Ok(())).unwrap(), ContainerDevice::Netkit);
        assert_eq!(choice.resolve(none()).unwrap(), ContainerDevice::Veth);
        let veth = ContainerDeviceChoice::Veth;
        assert_eq!(veth.resolve(Ok(())).unwrap(), ContainerDevice::Veth);
        let netkit = ContainerDeviceChoice::Netkit;
        assert_eq!(netkit.resolve(Ok(())).unwrap(), ContainerDevice::Netkit);
        let refused = netkit.resolve(none()).unwrap_err().to_string();
        assert!(refused.contains("no netkit") && refused.contains("--container-device=auto"));
        assert!(!refused.contains('\n'));
    }

    #[test]
    fn link_kinds() {
        assert_eq!(
            ContainerDevice::of_link_kind("veth"),
            Some(ContainerDevice::Veth)
        );
        assert_eq!(
            ContainerDevice::of_link_kind("netkit"),
            Some(ContainerDevice::Netkit)
        );
        assert_eq!(ContainerDevice::of_link_kind("dummy"), None);
        assert_eq!(ContainerDevice::Netkit.to_string(), "netkit");
    }
}
