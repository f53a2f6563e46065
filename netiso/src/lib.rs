//! netiso: per-container network isolation and monitoring with an eBPF datapath.
//!
//! Where things live (docs/architecture.md has the picture):
//! - [`cli`]: command line parsing and dispatch; `agent`: start-up and serving;
//! - `config`: the agent's flags (Mesos spellings), `--resources`, byte sizes and
//!   durations, and their start-up checks;
//! - [`ports`]: port ranges, the ephemeral range allocator and the port ledger (who
//!   owns which port);
//! - `control`: the container manager (create, update, destroy, recovery, records),
//!   its handle, the control API's requests and client;
//! - [`datapath`]: loading, attaching and pinning the eBPF programs, their maps and
//!   counters (the programs themselves are in `netiso-ebpf`);
//! - [`net`]: netlink, namespaces, links, addresses, routes, sysctls, and a
//!   container's namespace and veth pair;
//! - `tc`: htb/fq_codel shaping, the rate policy, unique egress flows;
//! - `stats`: per-container statistics (Mesos JSON, Prometheus);
//! - `server`: the read-only HTTP server and the control API server;
//! - `commands`: what the CLI runs besides the agent and the API's requests: `doctor`
//!   (what the kernel offers, probed), `monitor` (drops, live), `top`, `manual` (man
//!   pages, completions); `heap`: giving free memory back;
//! - [`cni`]: the CNI plugin (the same binary, run by a runtime with `CNI_COMMAND`).
mod agent;
pub mod cli;
pub mod cni;
pub mod commands;
mod config;
mod control;
pub mod datapath;
pub mod failpoints;
mod failure;
mod heap;
pub mod net;
pub mod ports;
mod server;
mod stats;
mod tc;
