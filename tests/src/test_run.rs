//! Helpers for running the tc programs through BPF_PROG_TEST_RUN.
use aya::{Ebpf, maps::Array, programs::SchedClassifier};
use netiso_common::{DATAPATH_CONFIG_MAP, DatapathConfig};

use crate::lab::{HOST_IPV4, HOST_IPV6};

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
    };
    config
        .set(0, lab_host, 0)
        .expect("writing the configuration");
}
