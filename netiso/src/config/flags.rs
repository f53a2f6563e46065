//! The flags of `netiso agent`, as clap parses them; checked in `config::check`.
use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgAction, Args};

use super::{
    PORT_MAPPING_ISOLATOR, ServerFlags,
    units::{Bytes, MesosDuration},
};

/// Options of `netiso agent`. Every flag also accepts its Mesos spelling, with
/// underscores (`--eth0_name`).
#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// Isolators to run; netiso is `network/port_mapping`, anything else is refused.
    #[arg(long, default_value = PORT_MAPPING_ISOLATOR)]
    pub isolation: String,

    /// Mesos resources: `ports:[a-b,…]` (what containers may be given) and
    /// `ephemeral_ports:[a-b]` (cut into containers' ephemeral ranges; required);
    /// `cpus:N` for per-CPU rates. Other resources are ignored.
    #[arg(long, value_name = "RESOURCES")]
    pub resources: Option<String>,

    /// Size of each container's ephemeral range: a power of two, at least 16.
    #[arg(
        long = "ephemeral-ports-per-container",
        alias = "ephemeral_ports_per_container",
        default_value_t = 1024
    )]
    pub ephemeral_ports_per_container: u32,

    /// Public interface [default: the interface of the default IPv4 route].
    #[arg(long = "eth0-name", alias = "eth0_name", value_name = "IFACE")]
    pub eth0_name: Option<String>,

    /// Loopback interface [default: the first loopback device].
    #[arg(long = "lo-name", alias = "lo_name", value_name = "IFACE")]
    pub lo_name: Option<String>,

    #[command(flatten)]
    pub egress: EgressFlags,

    #[command(flatten)]
    pub ingress: IngressFlags,

    /// Link speed for the `auto` per-CPU rates [default: read from the public
    /// interface].
    #[arg(
        long = "network-link-speed",
        alias = "network_link_speed",
        value_name = "BYTES"
    )]
    pub network_link_speed: Option<Bytes>,

    #[command(flatten)]
    pub statistics: StatisticsFlags,

    /// Address of the read-only HTTP server (health and statistics).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub servers: ServerFlags,

    /// Where the agent keeps its state across restarts.
    #[arg(
        long = "state-dir",
        alias = "state_dir",
        value_name = "DIR",
        default_value = "/var/lib/netiso"
    )]
    pub state_dir: PathBuf,

    /// Directory on a BPF filesystem where maps and links are pinned (kept across
    /// restarts).
    #[arg(
        long = "bpffs-root",
        alias = "bpffs_root",
        value_name = "DIR",
        default_value = "/sys/fs/bpf/netiso"
    )]
    pub bpffs_root: PathBuf,

    /// The host's mount namespace, where namespace names (`/run/netns`) and the BPF
    /// filesystem are mounted for runtimes, `ip netns` and bpftool to see. Matters only
    /// when the agent runs in a mount namespace of its own, as under systemd's
    /// sandboxing: it then enters this one for those mounts alone.
    #[arg(
        long = "host-mount-namespace",
        value_name = "FILE",
        default_value = "/proc/1/ns/mnt"
    )]
    pub host_mount_namespace: PathBuf,

    /// Log the datapath's decision on every packet (program, verdict, protocol,
    /// addresses, ports, length) through the agent's log at this level and below:
    /// `debug` shows them. Off by default, when it costs the datapath nothing; on, a
    /// few hundred nanoseconds per packet (see docs/benchmarks.md): for debugging.
    #[arg(
        long = "datapath-log",
        value_enum,
        value_name = "LEVEL",
        default_value_t = crate::datapath::DatapathLogLevel::Off
    )]
    pub datapath_log: crate::datapath::DatapathLogLevel,

    /// The pair of devices joining a new container to the host: `netkit` (Linux 6.7
    /// and later), whose container end runs netiso's checks in its own transmit path
    /// and sends on without a hop through the host end's receive backlog; `veth`,
    /// which every kernel has; `auto`, netkit where the kernel makes it, else veth
    /// (`netiso doctor` says which). Containers keep the kind they were made with
    /// across restarts and upgrades.
    #[arg(
        long = "container-device",
        value_enum,
        value_name = "KIND",
        default_value_t = crate::net::container_device::ContainerDeviceChoice::Auto
    )]
    pub container_device: crate::net::container_device::ContainerDeviceChoice,
}

/// Mesos's boolean flags: `--flag`, `--flag=true` or `--flag=false`.
macro_rules! bool_flag {
    () => {
        ArgAction::Set
    };
}

/// Egress (container → network) traffic control, with Mesos's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct EgressFlags {
    /// Fixed egress rate per container (bytes/s, like 37500KB).
    #[arg(
        id = "egress-rate-limit-per-container",
        long = "egress-rate-limit-per-container",
        alias = "egress_rate_limit_per_container",
        value_name = "BYTES"
    )]
    pub rate_limit_per_container: Option<Bytes>,
    /// Egress rate per CPU of the container, or `auto` (link speed / agent CPUs).
    #[arg(
        id = "egress-rate-per-cpu",
        long = "egress-rate-per-cpu",
        alias = "egress_rate_per_cpu",
        value_name = "BYTES|auto"
    )]
    pub rate_per_cpu: Option<String>,
    /// Lower clamp of the egress rate (Mesos's default floor is 125000B when limiting).
    #[arg(
        id = "minimum-egress-rate-limit",
        long = "minimum-egress-rate-limit",
        alias = "minimum_egress_rate_limit",
        value_name = "BYTES"
    )]
    pub minimum: Option<Bytes>,
    /// Upper clamp of the egress rate.
    #[arg(
        id = "maximum-egress-rate-limit",
        long = "maximum-egress-rate-limit",
        alias = "maximum_egress_rate_limit",
        value_name = "BYTES"
    )]
    pub maximum: Option<Bytes>,
    /// HTB ceil, applied when above the rate.
    #[arg(
        id = "egress-ceil-limit",
        long = "egress-ceil-limit",
        alias = "egress_ceil_limit",
        value_name = "BYTES"
    )]
    pub ceil: Option<Bytes>,
    /// HTB burst at the ceil rate.
    #[arg(
        id = "egress-burst",
        long = "egress-burst",
        alias = "egress_burst",
        value_name = "BYTES"
    )]
    pub burst: Option<Bytes>,
    /// Give each container its own flow of an fq_codel qdisc on the public interface
    /// (needs fq_codel in the kernel; without it the agent warns and runs on).
    #[arg(id = "egress-unique-flow-per-container", long = "egress-unique-flow-per-container", alias = "egress_unique_flow_per_container", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub unique_flow_per_container: bool,
    /// Where that fq_codel goes: `root` (handle 1:), or below class `X:Y` (hex;
    /// handle X+1:).
    #[arg(
        id = "egress-flow-classifier-parent",
        long = "egress-flow-classifier-parent",
        alias = "egress_flow_classifier_parent",
        default_value = "root"
    )]
    pub flow_classifier_parent: String,
}

/// Ingress (network → container) traffic control, with Mesos's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct IngressFlags {
    /// Fixed ingress rate per container (bytes/s).
    #[arg(
        id = "ingress-rate-limit-per-container",
        long = "ingress-rate-limit-per-container",
        alias = "ingress_rate_limit_per_container",
        value_name = "BYTES"
    )]
    pub rate_limit_per_container: Option<Bytes>,
    /// Ingress rate per CPU of the container, or `auto`.
    #[arg(
        id = "ingress-rate-per-cpu",
        long = "ingress-rate-per-cpu",
        alias = "ingress_rate_per_cpu",
        value_name = "BYTES|auto"
    )]
    pub rate_per_cpu: Option<String>,
    /// Lower clamp of the ingress rate.
    #[arg(
        id = "minimum-ingress-rate-limit",
        long = "minimum-ingress-rate-limit",
        alias = "minimum_ingress_rate_limit",
        value_name = "BYTES"
    )]
    pub minimum: Option<Bytes>,
    /// Upper clamp of the ingress rate.
    #[arg(
        id = "maximum-ingress-rate-limit",
        long = "maximum-ingress-rate-limit",
        alias = "maximum_ingress_rate_limit",
        value_name = "BYTES"
    )]
    pub maximum: Option<Bytes>,
    /// HTB ceil, applied when above the rate.
    #[arg(
        id = "ingress-ceil-limit",
        long = "ingress-ceil-limit",
        alias = "ingress_ceil_limit",
        value_name = "BYTES"
    )]
    pub ceil: Option<Bytes>,
    /// HTB burst at the ceil rate.
    #[arg(
        id = "ingress-burst",
        long = "ingress-burst",
        alias = "ingress_burst",
        value_name = "BYTES"
    )]
    pub burst: Option<Bytes>,
    /// Whether an update may add ingress limiting to a container made without it.
    #[arg(id = "ingress-isolate-existing-containers", long = "ingress-isolate-existing-containers", alias = "ingress_isolate_existing_containers", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "true", value_name = "BOOL")]
    pub isolate_existing_containers: bool,
}

/// Which optional statistics are collected, with Mesos's flags.
#[derive(Clone, Debug, Default, Args)]
pub struct StatisticsFlags {
    /// Report TCP active and TIME_WAIT connection counts.
    #[arg(id = "network-enable-socket-statistics-summary", long = "network-enable-socket-statistics-summary", alias = "network_enable_socket_statistics_summary", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub socket_summary: bool,
    /// Report TCP RTT percentiles.
    #[arg(id = "network-enable-socket-statistics-details", long = "network-enable-socket-statistics-details", alias = "network_enable_socket_statistics_details", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub socket_details: bool,
    /// Report the container's /proc/net/snmp.
    #[arg(id = "network-enable-snmp-statistics", long = "network-enable-snmp-statistics", alias = "network_enable_snmp_statistics", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub snmp: bool,
    /// Collect rate percentiles in the background.
    #[arg(id = "network-enable-rate-statistics", long = "network-enable-rate-statistics", alias = "network_enable_rate_statistics", action = bool_flag!(), num_args = 0..=1, default_missing_value = "true", default_value = "false", value_name = "BOOL")]
    pub rates: bool,
    /// Window of the rate statistics, like 5secs.
    #[arg(
        id = "network-rate-statistics-window",
        long = "network-rate-statistics-window",
        alias = "network_rate_statistics_window",
        value_name = "DURATION"
    )]
    pub rate_window: Option<MesosDuration>,
    /// Sampling interval of the rate statistics, like 50ms (at least 20ms).
    #[arg(
        id = "network-rate-statistics-interval",
        long = "network-rate-statistics-interval",
        alias = "network_rate_statistics_interval",
        value_name = "DURATION"
    )]
    pub rate_interval: Option<MesosDuration>,
}
