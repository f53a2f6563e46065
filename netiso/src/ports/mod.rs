//! Ports: the ranges containers own, how ephemeral ranges are cut from the agent's
//! pool ([`ephemeral`]), the ledger of who owns which port ([`ledger`]), the one
//! place that decides whether a container may have a port, and published ports whose
//! container port differs ([`mappings`]).
mod ephemeral;
mod ledger;
mod mappings;

pub use ephemeral::{EphemeralAllocator, MIN_EPHEMERAL_PORTS};
pub use ledger::{PortLedger, Restored};
pub use mappings::{PortMapping, check_mappings};
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::failure::refuse;

/// An inclusive range of ports, `begin..=end`. Unlike Mesos's right-open intervals it
/// can end at 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(begin: u16, end: u16) -> anyhow::Result<Self> {
        if begin > end {
            refuse!(
                Invalid,
                "port range {begin}-{end} is empty: its begin is after its end"
            );
        }
        Ok(Self { begin, end })
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.begin) + 1
    }

    /// Never true: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.begin..=self.end).contains(&port)
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.begin <= other.end && other.begin <= self.end
    }

    pub fn ports(&self) -> impl Iterator<Item = u16> {
        self.begin..=self.end
    }

    /// The fewest ranges that hold exactly `ports` (in any order, repeats allowed),
    /// in ascending order.
    pub fn merge(ports: &[u16]) -> Vec<PortRange> {
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<PortRange> = Vec::new();
        for port in sorted {
            match ranges.last_mut() {
                Some(last) if u32::from(last.end) + 1 == u32::from(port) => last.end = port,
                _ => ranges.push(PortRange {
                    begin: port,
                    end: port,
                }),
            }
        }
        ranges
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.begin, self.end)
    }
}

impl FromStr for PortRange {
    type Err = anyhow::Error;

    /// Parses `B-E` or a single port `P`.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let (begin, end) = text.split_once('-').unwrap_or((text, text));
        let parse = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                crate::failure::refusal(
                    crate::failure::Failure::Invalid,
                    format!("'{text}' is not a port range like 31000-31499"),
                )
            })
        };
        Self::new(parse(begin)?, parse(end)?)
    }
}

/// Parses a comma-separated list of ranges, such as `31000-31499,31600`.
pub fn parse_list(text: &str) -> anyhow::Result<Vec<PortRange>> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_ports_into_the_fewest_ranges() {
        let range = |b, e| PortRange::new(b, e).unwrap();
        assert_eq!(
            PortRange::merge(&[65535, 5, 6, 7, 9, 6, 65534]),
            vec![range(5, 7), range(9, 9), range(65534, 65535)]
        );
        assert_eq!(PortRange::merge(&[]), vec![]);
    }

    #[test]
    fn parses_ranges_and_single_ports() {
        assert_eq!(
            parse_list("31000-31499, 31600,65535").unwrap(),
            vec![
                PortRange::new(31000, 31499).unwrap(),
                PortRange::new(31600, 31600).unwrap(),
                PortRange::new(65535, 65535).unwrap(),
            ]
        );
    }

    #[test]
    fn rejects_bad_ranges_with_a_clear_message() {
        let error = "5-4".parse::<PortRange>().unwrap_err().to_string();
        assert_eq!(error, "port range 5-4 is empty: its begin is after its end");
        let error = "70000".parse::<PortRange>().unwrap_err().to_string();
        assert_eq!(error, "'70000' is not a port range like 31000-31499");
    }

    #[test]
    fn measures_and_compares() {
        let a = PortRange::new(65000, 65535).unwrap();
        assert_eq!(a.len(), 536);
        assert!(a.contains(65535));
        assert!(a.overlaps(&PortRange::new(65535, 65535).unwrap()));
        assert!(!a.overlaps(&PortRange::new(1, 64999).unwrap()));
        assert_eq!(a.to_string(), "65000-65535");
    }
}
