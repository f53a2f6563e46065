//! Names shared by the object and the agent: maps as pinned, programs, load-time
//! constants; and the few values the programs and the agent agree on by name.
/// Name of the per-CPU array counting what crosses the public interface.
pub const PUBLIC_IFACE_COUNTERS_MAP: &str = "PUBLIC_IFACE_COUNTERS";

/// Names of the tc programs in the eBPF object.
pub const PUBLIC_INGRESS_PROGRAM: &str = "public_ingress";
pub const PUBLIC_EGRESS_PROGRAM: &str = "public_egress";

/// Map names, as pinned under the agent's bpffs root.
pub const DROP_EVENTS_MAP: &str = "DROP_EVENTS";
/// Entry 0: 1 while the agent has a listener for drop events, else 0.
pub const DROP_EVENTS_SWITCH_MAP: &str = "DROP_EVENTS_SWITCH";
pub const DROP_EVENT_BUDGETS_MAP: &str = "DROP_EVENT_BUDGETS";
pub const PORT_OWNERS_MAP: &str = "PORT_OWNERS";
pub const VETH_CONTAINERS_MAP: &str = "VETH_CONTAINERS";
pub const CONTAINER_COUNTERS_MAP: &str = "CONTAINER_COUNTERS";
pub const DATAPATH_CONFIG_MAP: &str = "DATAPATH_CONFIG";
pub const ECHO_OWNERS_MAP: &str = "ECHO_OWNERS";
pub const CONTAINER_SHAPING_MAP: &str = "CONTAINER_SHAPING";
pub const FRAGMENT_ROUTES_MAP: &str = "FRAGMENT_ROUTES";
pub const CONTAINER_ECHO_IDS_MAP: &str = "CONTAINER_ECHO_IDS";
pub const HOST_PORT_ACCESS_MAP: &str = "HOST_PORT_ACCESS";
pub const HOST_ADDRESSES_MAP: &str = "HOST_ADDRESSES";
pub const EGRESS_POLICERS_MAP: &str = "EGRESS_POLICERS";
pub const INBOUND_FRAGMENTS_MAP: &str = "INBOUND_FRAGMENTS";
pub const PORT_TRANSLATIONS_MAP: &str = "PORT_TRANSLATIONS";
pub const CONTAINER_PORT_TRANSLATIONS_MAP: &str = "CONTAINER_PORT_TRANSLATIONS";
pub const LOOPBACK_TRANSLATIONS_MAP: &str = "LOOPBACK_TRANSLATIONS";
pub const CONTAINER_NETNS_MAP: &str = "CONTAINER_NETNS";
pub const CONTAINER_ETH0_INDEXES_MAP: &str = "CONTAINER_ETH0_INDEXES";

/// `HOST_PORT_ACCESS` value of a host port containers may not reach (0: they may).
pub const HOST_PORT_CLOSED: u8 = 1;

/// Program on the host-side veth's ingress: packets leaving a container.
pub const CONTAINER_VETH_INGRESS_PROGRAM: &str = "container_veth_ingress";
/// The same program for a netkit pair, on its container end's transmit path
/// (`BPF_NETKIT_PEER`, attached through the host end).
pub const CONTAINER_NETKIT_PEER_PROGRAM: &str = "container_netkit_peer";
/// `skb->mark` of a packet a container's netkit program sends to the network, from
/// that program to the public interface's egress program, which clears it: a veth's
/// packets show where they came from by the interface they arrived on; a netkit
/// pair's do not. ("ni" in its high half; the low bits, which policy routing rules
/// usually test, are clear.)
pub const CONTAINER_PACKET_MARK: u32 = 0x6e69_0000;
/// Program on the host's loopback ingress: host traffic to containers' ports.
pub const HOST_LO_INGRESS_PROGRAM: &str = "host_lo_ingress";
/// Program on a container's eth0 ingress: hands loopback traffic to the container's lo.
pub const CONTAINER_ETH0_INGRESS_PROGRAM: &str = "container_eth0_ingress";
/// Program on a container's lo ingress: sends traffic for ports it does not own out.
/// One program serves every container: it finds its container by the namespace's
/// cookie (`CONTAINER_NETNS`), on kernels whose tc programs may ask for it (6.15+).
pub const CONTAINER_LO_EGRESS_PROGRAM: &str = "container_lo_egress";
/// The same for older kernels: one loaded copy per container, told its container by
/// load-time constants.
pub const CONTAINER_LO_EGRESS_COPY_PROGRAM: &str = "container_lo_egress_copy";
/// Load-time constant of the copied container lo program: its container's slot.
pub const CONTAINER_SLOT_GLOBAL: &str = "CONTAINER_SLOT";
/// Load-time constant of the datapath: the public interface's MTU. What containers
/// send to the network must fit it (their pairs take loopback-sized packets between
/// containers); 0, as in the BPF tests' default, checks nothing.
pub const PUBLIC_MTU_GLOBAL: &str = "PUBLIC_MTU";
/// The probe's target: the veth whose peer it redirects to.
pub const PROBE_PEER_IFINDEX_GLOBAL: &str = "PROBE_PEER_IFINDEX";
/// Not part of the datapath: attached for an instant at start in private namespaces,
/// to learn what this kernel's `bpf_redirect_peer` does (`netiso/src/datapath/redirect_peer_probe.rs`).
pub const PROBE_REDIRECT_PEER_PROGRAM: &str = "probe_redirect_peer";
/// Not part of the datapath: a classifier that does nothing, the datapath
/// benchmark's baseline.
pub const EMPTY_CLASSIFIER_PROGRAM: &str = "empty_classifier";
