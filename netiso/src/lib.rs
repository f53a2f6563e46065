//! netiso: per-container network isolation and monitoring with an eBPF datapath.
//!
//! Where things live:
//! - [`cli`]: command line parsing and dispatch;
//! - [`agent`]: the long-running agent (start-up checks, serve, shut down);
//! - [`bpffs`]: the BPF filesystem where maps are pinned;
//! - [`datapath`]: loading, attaching and reading the eBPF programs and maps;
//! - [`http`]: the read-only HTTP server (`/health`, statistics).
pub mod agent;
pub mod bpffs;
pub mod cli;
pub mod datapath;
pub mod http;
