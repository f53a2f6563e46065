//! Which tests each VM runs. Run by `cargo xtask test` (6.12 and 5.10 side by side),
//! a VM runs only what its kernel changes; the host runs every test before, so what no
//! kernel changes (the CNI protocol, the state directory, the CLI, failpoints, the
//! operators' tools, scrapes, the soak, and the verdicts of the test-run programs)
//! is not run again under emulation. `cargo xtask vm-test --kernel K` runs every test
//! on K.
use std::path::Path;

/// The tests a VM runs beside the other: of the BPF test-run binary, of the lab
/// binary, and of the lab again with veth containers (`NETISO_TEST_CONTAINER_DEVICE`).
/// Each entry matches test names containing it, as libtest's filters do.
pub struct Lane {
    pub bpf: &'static [&'static str],
    pub lab: &'static [&'static str],
    pub veth_pass: &'static [&'static str],
}

/// The test-run tests every VM kernel runs: every program through its verifier, the
/// pinned layout as it sees the maps, and the generated frames against the model.
const BPF_ON_EVERY_KERNEL: [&str; 3] = ["verifier::", "pinned_layout::", "fuzz::"];

/// 5.10, the oldest kernel netiso supports: no tcx (the public interface and lo get
/// netlink filters, kept across restarts), a `bpf_redirect_peer` that does not count
/// what it delivers (so every delivery goes through the veth), per-container copies
/// of the lo program, no netkit, and its verifier. Its lab tests: the lifecycle
/// through netlink and a restart, an agent asked for netkit refusing to start, loopback traffic through the copies and the veth, the receive
/// counters, published ports translated on those paths, and fq_codel's statistics on
/// veth pairs.
pub const BESIDE_ON_5_10: Lane = Lane {
    bpf: &BPF_ON_EVERY_KERNEL,
    lab: &[
        "lifecycle::a_killed_agent_is_recovered_and_connections_never_notice",
        "lifecycle::create_list_and_destroy_through_the_cli",
        "container_device::netkit_is_refused_where_the_kernel_lacks_it",
        "loopback::container_to_container_tcp_ipv4",
        "loopback::host_to_container_udp_ipv6",
        "loopback::large_packets_cross_whole_locally_and_within_the_mtu_to_the_network_ipv4",
        "statistics::link_and_datapath_counters_equal_known_traffic",
        "statistics::traffic_control_entries_exist_exactly_when_their_qdiscs_do",
        "cni::a_published_port_reaches_the_container_port_from_everywhere",
    ],
    veth_pass: &[],
};

/// 6.12 (Debian 12's backports): netkit, so containers get netkit pairs, and
/// fq_codel, which the host lacks. Its lab tests: netkit and veth containers side by
/// side, what containers send through their own transmit path (raw sockets, forged
/// sources, multicast, echo, loopback to others and the host, packets longer than the
/// MTU), deliveries into netkit pairs, their link counters and rate limits (htb with
/// fq_codel leaves), unique egress flows, the debug log's program name, published
/// ports, and the previous release's veth containers upgraded by an agent that gives
/// new ones netkit; then the egress limit again with veth containers.
pub const BESIDE_ON_6_12: Lane = Lane {
    bpf: &[
        "verifier::",
        "pinned_layout::",
        "fuzz::",
        "outbound::a_netkit",
    ],
    lab: &[
        "container_device::veth_and_netkit_containers_side_by_side",
        "hostile::a_container_cannot_skip_its_egress_limit_with_a_raw_socket",
        "hostile::forged_sources_never_leave_a_container",
        "hostile::multicast_and_link_local_from_a_container_stay_home",
        "hostile::echo_identifiers_are_the_containers_own_and_never_the_hosts",
        "loopback::container_to_container_tcp_ipv4",
        "loopback::host_to_container_udp_ipv6",
        "loopback::large_packets",
        "port_isolation::container_network_shares_the_hosts_addresses",
        "port_isolation::remote_tcp_to_an_owned_port_reaches_the_owner_only",
        "port_isolation::sending_from_a_port_the_container_does_not_own",
        "reachability::container_learns_the_path_mtu_from_icmp_errors",
        "statistics::link_and_datapath_counters_equal_known_traffic",
        "statistics::traffic_control_entries_exist_exactly_when_their_qdiscs_do",
        "rate_limits::small_egress_limit",
        "rate_limits::small_ingress_limit",
        "rate_limits::an_iperf3_stream_under_a_10_mbit_limit",
        "egress_flows::",
        "edge_packets::",
        "monitor::with_debug_logging",
        "doctor::doctor_reports_what_the_kernel_really_has",
        "cni::a_published_port_reaches_the_container_port_from_everywhere",
        "upgrade::the_previous_release_is_upgraded_in_place_under_traffic",
    ],
    veth_pass: &["rate_limits::small_egress_limit"],
};

/// Which tests a VM runs: every test matching any of the filters (none: all), or a
/// lane's.
pub enum Filters {
    All(Vec<String>),
    Lane(&'static Lane),
}

/// The kinds of test binaries a VM runs.
enum Binary {
    Bpf,
    Lab,
    /// The systemd VM's: ignored elsewhere.
    Other,
}

fn kind(binary: &Path) -> Binary {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("lab-") {
        Binary::Lab
    } else if name.starts_with("bpf-") {
        Binary::Bpf
    } else {
        Binary::Other
    }
}

impl Filters {
    /// The filter arguments for the test binary `binary`.
    pub fn for_binary(&self, binary: &Path) -> String {
        match (self, kind(binary)) {
            (Filters::All(filters), _) => filters.join(" "),
            (Filters::Lane(lane), Binary::Bpf) => lane.bpf.join(" "),
            (Filters::Lane(lane), Binary::Lab) => lane.lab.join(" "),
            (Filters::Lane(_), Binary::Other) => String::new(),
        }
    }

    /// Names of which at least one test must run: a lane's entries.
    pub fn expected(&self) -> Vec<String> {
        match self {
            Filters::All(_) => Vec::new(),
            Filters::Lane(lane) => [lane.bpf, lane.lab, lane.veth_pass]
                .concat()
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        }
    }

    /// The filter arguments of the lab binary's second run, with veth containers.
    pub fn veth_pass(&self, binary: &Path) -> Option<String> {
        match (self, kind(binary)) {
            (Filters::Lane(lane), Binary::Lab) if !lane.veth_pass.is_empty() => {
                Some(lane.veth_pass.join(" "))
            }
            _ => None,
        }
    }
}
