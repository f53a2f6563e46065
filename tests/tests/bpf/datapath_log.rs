//! The datapath's debug log (`netiso agent --datapath-log=debug`): one line per
//! packet and program with the verdict and the flow, read as the agent reads it
//! (aya-log); nothing at all while it is off.
use std::sync::{Arc, Mutex};

use super::fixtures::*;

/// Keeps every record aya-log hands it.
#[derive(Default)]
struct Collected(Mutex<Vec<(String, log::Level, String)>>);

impl log::Log for Collected {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push((
            record.target().to_owned(),
            record.level(),
            record.args().to_string(),
        ));
    }

    fn flush(&self) {}
}

/// Runs `frame` through `program` of a datapath logging at `level`; the records.
fn logged(level: DatapathLogLevel, program: &str, frame: &[u8]) -> (u32, Vec<String>) {
    let mut ebpf = datapath_logging(level);
    let collected = Arc::new(Collected::default());
    let mut logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, Arc::clone(&collected))
        .expect("aya-log's ring buffer");
    let verdict = run(&ebpf, program, frame);
    logger.flush();
    let records = collected.0.lock().unwrap().clone();
    for (target, level, _) in &records {
        assert_eq!(target, "netiso_datapath");
        assert_eq!(*level, log::Level::Debug);
    }
    (
        verdict,
        records.into_iter().map(|(_, _, text)| text).collect(),
    )
}

#[test]
fn each_decision_is_logged_with_its_flow_when_debug_is_on() {
    let inbound = udp4_in(31000);
    let (verdict, lines) = logged(DatapathLogLevel::Debug, PUBLIC_INGRESS_PROGRAM, &inbound);
    assert_eq!(verdict, REDIRECT);
    assert_eq!(
        lines,
        [format!(
            "public_ingress: redirect proto 17 {REMOTE_IPV4}:40000 -> {HOST_IPV4}:31000 len {}",
            inbound.len()
        )]
    );
    let unowned = udp6_out_unowned();
    let (verdict, lines) = logged(
        DatapathLogLevel::Debug,
        CONTAINER_VETH_INGRESS_PROGRAM,
        &unowned,
    );
    assert_eq!(verdict, SHOT);
    assert_eq!(
        lines,
        [format!(
            "container_veth_ingress: drop proto 17 [{HOST_IPV6}]:22 -> [{REMOTE_IPV6}]:53 len {}",
            unowned.len()
        )]
    );
}

#[test]
fn nothing_is_logged_below_debug_or_when_off() {
    for level in [DatapathLogLevel::Off, DatapathLogLevel::Info] {
        let (verdict, lines) = logged(level, PUBLIC_INGRESS_PROGRAM, &udp4_in(31000));
        assert_eq!(verdict, REDIRECT);
        assert!(lines.is_empty(), "{level:?}: {lines:?}");
    }
}

/// A UDP datagram container 0 sends over IPv6 from port 22, which it does not own.
fn udp6_out_unowned() -> Vec<u8> {
    v6(HOST_IPV6, REMOTE_IPV6, IPPROTO_UDP, &udp_segment(22, 53, 4))
}
