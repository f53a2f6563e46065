//! netiso: per-container network isolation and monitoring with an eBPF datapath.
//!
//! Where things live:
//! - [`cli`]: command line parsing and dispatch;
//! - [`agent`]: the long-running agent (start-up checks, serve, shut down);
//! - [`config`]: the agent's flags (Mesos spellings) and their validation;
//! - [`bpffs`]: the BPF filesystem where maps are pinned;
//! - [`doctor`]: what the kernel offers, probed;
//! - [`datapath`]: loading, attaching and reading the eBPF programs and maps;
//! - [`http`]: the read-only HTTP server (`/health`, statistics);
//! - [`api`]: the control API over a Unix socket, and its client;
//! - [`manager`]: creates and destroys containers, allocates their ports, keeps state;
//! - [`container`]: a container's namespace and veth pair;
//! - [`stats`]: per-container statistics (Mesos JSON, Prometheus);
//! - [`netns`], [`netlink`]: network namespaces and rtnetlink operations;
//! - [`netlink_sync`]: blocking netlink requests and dumps (statistics, qdiscs);
//! - [`traffic_control`], [`rate_limits`]: htb/fq_codel shaping and the rates it gets;
//! - [`egress_flows`]: the public interface's fq_codel and each container's flow in it;
//! - [`ports`]: port ranges and the ephemeral range allocator;
//! - [`resources`], [`units`]: Mesos's `--resources` syntax, byte sizes, durations.
pub mod agent;
pub mod api;
pub mod bpffs;
pub mod cli;
pub mod config;
pub mod container;
pub mod datapath;
pub mod doctor;
pub mod egress_flows;
pub mod http;
pub mod manager;
pub mod netlink;
pub mod netlink_sync;
pub mod netns;
pub mod ports;
pub mod rate_limits;
pub mod resources;
pub mod stats;
pub mod traffic_control;
pub mod units;
