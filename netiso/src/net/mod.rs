//! The host's network plumbing, all in Rust over netlink: namespaces, links, veth
//! pairs, addresses, routes, neighbours and sysctls. [`container_network`] builds a
//! container's namespace and veth pair from these pieces; [`host`] reads the host's
//! side at start-up; [`host_mounts`] makes the mounts the host must see from inside
//! a service manager's sandbox; [`veth_reaper`] deletes containers' veth pairs in the background.
pub mod container_network;
pub mod host;
pub mod host_mounts;
pub mod links;
pub mod netlink;
pub mod netns;
pub mod routes;
pub mod sysctl;
pub mod veth_reaper;

pub use links::{Link, VethEnd};
pub use netlink::NetlinkSocket;
