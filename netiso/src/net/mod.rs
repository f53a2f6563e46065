//! The host's network plumbing, all in Rust over netlink: namespaces, links, veth
//! and netkit pairs, addresses, routes, neighbours and sysctls. [`container_network`]
//! builds a container's namespace and pair of devices from these pieces
//! ([`container_device`]: which kind); [`host`] reads the host's
//! side at start-up; [`host_mounts`] makes the mounts the host must see from inside
//! a service manager's sandbox; [`veth_reaper`] deletes containers' veth pairs in the background.
pub mod container_device;
pub mod container_network;
pub mod host;
pub mod host_mounts;
pub mod links;
pub mod netlink;
pub mod netns;
pub mod routes;
pub mod sysctl;
pub mod veth_reaper;

pub use container_device::ContainerDevice;
pub use links::{Link, PairEnd};
pub use netlink::NetlinkSocket;
