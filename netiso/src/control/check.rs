//! Checking that a container is as it was made (CNI's CHECK): its veth, its interface
//! with the host's addresses and its default routes inside, and its datapath entries.
use std::net::IpAddr;

use anyhow::Context as _;

use super::manager::Manager;
use crate::{
    datapath::{NETLINK_PRIORITY, netkit},
    failure::refuse,
    net::{ContainerDevice, NetlinkSocket, netns},
    tc::{CLSACT_EGRESS, CLSACT_INGRESS},
};

/// Every network namespace's loopback device has this index.
const LOOPBACK_IFINDEX: u32 = 1;

/// Whether link `index` (in the socket's namespace) has netiso's filter under
/// `parent` (its clsact ingress or egress).
fn has_netiso_filter(socket: &mut NetlinkSocket, index: u32, parent: u32) -> anyhow::Result<bool> {
    Ok(socket
        .bpf_filter_priorities(index, parent)?
        .contains(&NETLINK_PRIORITY))
}

impl Manager {
    /// Refuses (as a conflict) with every difference found, or succeeds.
    pub fn check(&self, id: &str) -> anyhow::Result<()> {
        let Some(managed) = self.containers.get(id) else {
            refuse!(NotFound, "no container {id}");
        };
        let (info, network) = (&managed.info, &managed.network);
        let mut problems = self.datapath.check_container(network)?;
        let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
        match socket.link(&info.host_veth)? {
            Some(link) if link.index == network.host_veth_index => {
                let has_program = match network.device {
                    ContainerDevice::Veth => {
                        has_netiso_filter(&mut socket, link.index, CLSACT_INGRESS)?
                    }
                    ContainerDevice::Netkit => !netkit::peer_programs(link.index)
                        .context("listing the programs of its netkit pair")?
                        .is_empty(),
                };
                if !has_program {
                    problems.push(format!(
                        "its {} {} has lost its program",
                        network.device, info.host_veth
                    ));
                }
            }
            _ => problems.push(format!("its veth {} is gone or replaced", info.host_veth)),
        }
        let interface = self.interface_of(info).to_owned();
        let expected = (self.host.ipv4, self.host.ipv6);
        if info.netns.exists() {
            let inside = netns::run_in(&info.netns, || -> anyhow::Result<Vec<String>> {
                let mut problems = Vec::new();
                let mut socket = NetlinkSocket::route().context("opening a netlink socket")?;
                let Some(link) = socket.link(&interface)? else {
                    return Ok(vec![format!("its interface {interface} is gone")]);
                };
                if link.index != network.container_eth0_index {
                    problems.push(format!("its interface {interface} was replaced"));
                }
                let (v4, v6) = socket.link_addresses(link.index)?;
                for (want, have) in [
                    (expected.0.map(IpAddr::V4), v4.map(IpAddr::V4)),
                    (expected.1.map(IpAddr::V6), v6.map(IpAddr::V6)),
                ] {
                    if let Some(want) = want
                        && have != Some(want)
                    {
                        problems.push(format!("{interface} lacks the address {want}"));
                    }
                }
                if expected.0.is_some() && socket.default_route_ifindex()? != Some(link.index) {
                    problems.push(format!("its default route is not through {interface}"));
                }
                for (name, index, parent) in [
                    (interface.as_str(), link.index, CLSACT_INGRESS),
                    ("lo", LOOPBACK_IFINDEX, CLSACT_EGRESS),
                ] {
                    if !has_netiso_filter(&mut socket, index, parent)? {
                        problems.push(format!("its {name} has lost its program"));
                    }
                }
                Ok(problems)
            })??;
            problems.extend(inside);
        } else {
            problems.push(format!("its namespace {} is gone", info.netns.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            refuse!(
                Conflict,
                "container {id} is not as it was made: {}",
                problems.join("; ")
            );
        }
    }
}
