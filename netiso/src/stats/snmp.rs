//! SNMP counters of the namespace the calling thread is in, from `/proc/net/snmp`:
//! the `Ip`, `Icmp`, `Tcp` and `Udp` sections, keyed by the kernel's names as Mesos
//! keys them (`tcp_stats.RetransSegs`). Every field the running kernel has is kept,
//! so newer kernels report a few more than Mesos knew.
use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// Mesos's `net_snmp_statistics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnmpStatistics {
    pub ip_stats: BTreeMap<String, i64>,
    pub icmp_stats: BTreeMap<String, i64>,
    pub tcp_stats: BTreeMap<String, i64>,
    pub udp_stats: BTreeMap<String, i64>,
}

/// The file is pairs of lines: `Section: Name Name …` then `Section: value value …`.
pub fn parse(text: &str) -> anyhow::Result<SnmpStatistics> {
    let mut stats = SnmpStatistics::default();
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else {
            bail!("/proc/net/snmp ends after a header line");
        };
        let (Some((section, names)), Some((section2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            bail!("/proc/net/snmp has a line without a section: {names}");
        };
        if section != section2 {
            bail!("/proc/net/snmp pairs {section} names with {section2} values");
        }
        let target = match section {
            "Ip" => &mut stats.ip_stats,
            "Icmp" => &mut stats.icmp_stats,
            "Tcp" => &mut stats.tcp_stats,
            "Udp" => &mut stats.udp_stats,
            _ => continue,
        };
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            bail!(
                "/proc/net/snmp section {section} has {} names but {} values",
                names.len(),
                values.len()
            );
        }
        for (name, value) in names.into_iter().zip(values) {
            let value = value
                .parse()
                .with_context(|| format!("/proc/net/snmp {section} {name}: {value}"))?;
            target.insert(name.to_owned(), value);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_keeps_the_four_mesos_reports() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 2 64\nIcmp: InMsgs\nIcmp: 3\n\
                    IcmpMsg: InType3\nIcmpMsg: 1\nTcp: MaxConn RetransSegs\nTcp: -1 9\n\
                    Udp: InDatagrams\nUdp: 5\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let stats = parse(text).unwrap();
        assert_eq!(stats.ip_stats["DefaultTTL"], 64);
        assert_eq!(stats.icmp_stats["InMsgs"], 3);
        assert_eq!(stats.tcp_stats["MaxConn"], -1);
        assert_eq!(stats.tcp_stats["RetransSegs"], 9);
        assert_eq!(stats.udp_stats.len(), 1);
    }

    #[test]
    fn refuses_malformed_files() {
        assert!(parse("Ip: Forwarding\n").is_err());
        assert!(parse("Ip: Forwarding\nIp: x\n").is_err());
        assert!(parse("Ip: A B\nIp: 1\n").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let stats = parse(&std::fs::read_to_string("/proc/net/snmp").unwrap()).unwrap();
        assert!(stats.tcp_stats.contains_key("RetransSegs"));
        assert!(stats.ip_stats.contains_key("Forwarding"));
    }
}
