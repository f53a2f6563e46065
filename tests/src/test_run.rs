//! Helpers for running the tc programs through BPF_PROG_TEST_RUN.
use std::sync::OnceLock;

use aya::{Ebpf, maps::Array, programs::SchedClassifier};
use netiso::datapath::{DatapathLogLevel, EBPF_OBJECT, loader};
use netiso_common::{
    CONTAINER_LO_EGRESS_PROGRAM, CONTAINER_SHAPING_MAP, ContainerShaping, DATAPATH_CONFIG_MAP,
    DatapathConfig,
};

use crate::{
    lab::{HOST_IPV4, HOST_IPV6},
    packets::FRAME_SRC_MAC,
};

/// Loads the programs `names` of `ebpf` into the kernel (the verifier runs here).
pub fn load_programs(ebpf: &mut Ebpf, names: &[&str]) {
    for name in names {
        let program: &mut SchedClassifier = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .expect("a tc classifier");
        program
            .load()
            .unwrap_or_else(|e| panic!("verifier rejects {name}: {e:?}"));
    }
}

/// Whether this kernel takes the containers' shared loopback program (tc programs that
/// read a namespace's cookie: 6.15 and later), as the agent finds out at start.
/// Asked once per test process.
pub fn kernel_has_shared_loopback() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let mut ebpf = loader(DatapathLogLevel::Off)
            .load(EBPF_OBJECT)
            .expect("loading the eBPF object");
        let program: &mut SchedClassifier = ebpf
            .program_mut(CONTAINER_LO_EGRESS_PROGRAM)
            .expect("the shared loopback program")
            .try_into()
            .expect("a tc classifier");
        program.load().is_ok()
    })
}

/// Writes the lab host's addresses into the datapath configuration (public interface
/// ifindex 2, loopback 1).
pub fn configure_as_lab_host(ebpf: &mut Ebpf) {
    let mut config: Array<_, DatapathConfig> =
        Array::try_from(ebpf.map_mut(DATAPATH_CONFIG_MAP).expect("config map")).expect("an array");
    let lab_host = DatapathConfig {
        host_ipv4: HOST_IPV4.octets(),
        host_ipv6: HOST_IPV6.octets(),
        has_ipv4: 1,
        has_ipv6: 1,
        public_ifindex: 2,
        host_lo_ifindex: 1,
        egress_flows_qdisc: 0,
        host_mac: FRAME_SRC_MAC,
        deliver_through_veth: 0,
        _pad: 0,
    };
    config
        .set(0, lab_host, 0)
        .expect("writing the configuration");
}

/// The fq_codel handle (`1:`) test runs use for unique egress flows.
pub const FLOWS_QDISC: u32 = 0x0001_0000;

/// Turns unique egress flows on (qdisc [`FLOWS_QDISC`]) and gives each `(slot, flow)`
/// its container that flow.
pub fn enable_unique_flows(ebpf: &mut Ebpf, flows: impl IntoIterator<Item = (u32, u32)>) {
    let mut config: Array<_, DatapathConfig> =
        Array::try_from(ebpf.map_mut(DATAPATH_CONFIG_MAP).expect("config map")).expect("an array");
    let mut host = config.get(&0, 0).expect("reading the configuration");
    host.egress_flows_qdisc = FLOWS_QDISC;
    config.set(0, host, 0).expect("writing the configuration");
    let mut shaping: Array<_, ContainerShaping> =
        Array::try_from(ebpf.map_mut(CONTAINER_SHAPING_MAP).expect("shaping map"))
            .expect("an array");
    for (slot, flow) in flows {
        let entry = ContainerShaping {
            egress_flow_classid: FLOWS_QDISC | flow,
            ..Default::default()
        };
        shaping
            .set(slot, entry, 0)
            .expect("writing a shaping entry");
    }
}
