//! The tc programs on crafted frames through BPF_PROG_TEST_RUN: every parse branch
//! and steering decision, exact verdicts and counters, the echo table, edge packets
//! (IPv4 options, IPv6 extension headers, fragments, VLAN tags, truncated transport
//! headers, ICMP errors). No interface is involved; frames shorter than an IP header
//! cannot go through test runs (the kernel refuses them) and are covered by the lab.
mod classify;
mod datapath_log;
mod drop_events;
mod egress_flows;
mod fixtures;
mod fuzz;
mod hostile;
mod inbound;
mod model;
mod outbound;
mod pinned_layout;
mod translation;
mod verifier;
