//! Lab tests: real namespaces, real packets, the real agent binary. Every test builds
//! its own lab (`netiso_tests::lab`) and removes it, also when it fails.
mod cli;
mod cni;
mod containerd;
mod doctor;
mod edge_packets;
mod egress_flows;
mod faults;
mod host_files;
mod host_services;
mod hostile;
mod lifecycle;
mod loopback;
mod monitor;
mod podman;
mod port_isolation;
mod prometheus;
mod public_counters;
mod rate_limits;
mod reachability;
mod scrapes;
mod soak;
mod state_dir;
mod statistics;
mod statistics_format;
mod top;
mod upgrade;
