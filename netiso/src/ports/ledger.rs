//! The port ledger: which container owns which ports. Every request for ports goes
//! through it before anything is built, so the datapath's port map only ever gets
//! what the ledger granted.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;

use super::{EphemeralAllocator, PortRange};
use crate::failure::refuse;

/// What one container holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holding {
    ephemeral: PortRange,
    ports: Vec<PortRange>,
}

/// What a recovered container holds after [`PortLedger::restore`], and what had to
/// change for it to hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub ephemeral: PortRange,
    pub ports: Vec<PortRange>,
    pub warnings: Vec<String>,
}

/// The agent's ports (its `ports` resource and its ephemeral pool) and who owns them.
#[derive(Clone, Debug)]
pub struct PortLedger {
    /// Ports containers may ask for.
    managed: Vec<PortRange>,
    ephemeral: EphemeralAllocator,
    holdings: BTreeMap<String, Holding>,
}

impl PortLedger {
    pub fn new(managed: Vec<PortRange>, ephemeral: EphemeralAllocator) -> Self {
        Self {
            managed,
            ephemeral,
            holdings: BTreeMap::new(),
        }
    }

    /// Whether container `id` may have `ports`: they must be the agent's, nobody
    /// else's (`id`'s own current ports excepted) and each asked for once.
    pub fn check(&self, id: &str, ports: &[PortRange]) -> anyhow::Result<()> {
        for range in ports {
            if range.begin > range.end {
                refuse!(
                    Invalid,
                    "port range {}-{} is empty: its begin is after its end",
                    range.begin,
                    range.end
                );
            }
            if !self
                .managed
                .iter()
                .any(|m| m.begin <= range.begin && range.end <= m.end)
            {
                let list: Vec<String> = self.managed.iter().map(ToString::to_string).collect();
                refuse!(
                    Invalid,
                    "Some non-ephemeral ports specified in [{range}] are not managed by the agent; it manages [{}]",
                    list.join(",")
                );
            }
            if let Some((other, _)) = self
                .holdings
                .iter()
                .filter(|(holder, _)| *holder != id)
                .find(|(_, held)| held.ports.iter().any(|p| p.overlaps(range)))
            {
                refuse!(
                    Conflict,
                    "ports [{range}] overlap ports of container {other}"
                );
            }
        }
        let mut seen = BTreeSet::new();
        for port in ports.iter().flat_map(PortRange::ports) {
            if !seen.insert(port) {
                refuse!(Invalid, "port {port} is requested twice");
            }
        }
        Ok(())
    }

    /// Gives a new container `id` its `ports` and a fresh ephemeral range, which it
    /// returns; on failure nothing is taken.
    pub fn reserve(&mut self, id: &str, ports: &[PortRange]) -> anyhow::Result<PortRange> {
        if self.holdings.contains_key(id) {
            bail!("container {id} already holds ports");
        }
        self.check(id, ports)?;
        let ephemeral = self.ephemeral.allocate()?;
        self.holdings.insert(
            id.to_owned(),
            Holding {
                ephemeral,
                ports: ports.to_vec(),
            },
        );
        Ok(ephemeral)
    }

    /// Takes back what a recovered container `id` held before the agent restarted,
    /// resolving conflicts rather than losing the container: recorded ports another
    /// container already holds are left out of its ports, and a recorded ephemeral
    /// range that overlaps another's is replaced by a fresh one. An ephemeral range that
    /// is not one of this agent's blocks (the flags changed) is kept outside the
    /// allocator. What was changed is said in the warnings.
    pub fn restore(
        &mut self,
        id: &str,
        ephemeral: PortRange,
        ports: &[PortRange],
    ) -> anyhow::Result<Restored> {
        if self.holdings.contains_key(id) {
            bail!("container {id} already holds ports");
        }
        let held_by_others = |port: u16| {
            self.holdings.iter().find(|(_, held)| {
                held.ephemeral.contains(port) || held.ports.iter().any(|r| r.contains(port))
            })
        };
        let mut warnings = Vec::new();
        let mut kept = Vec::new();
        for port in ports.iter().flat_map(PortRange::ports) {
            match held_by_others(port) {
                Some((other, _)) => warnings.push(format!(
                    "port {port} is also recorded for container {other}; left to {other}"
                )),
                None => kept.push(port),
            }
        }
        let clash = ephemeral.ports().find_map(held_by_others);
        let ephemeral = match clash {
            Some((other, _)) => {
                let fresh = self.ephemeral.allocate()?;
                warnings.push(format!(
                    "its ephemeral range {ephemeral} overlaps ports of container {other}; given {fresh} instead"
                ));
                fresh
            }
            None => {
                if let Err(error) = self.ephemeral.allocate_exact(ephemeral) {
                    warnings.push(format!("{error:#}; kept, outside the allocator"));
                }
                ephemeral
            }
        };
        let ports = PortRange::merge(&kept);
        self.holdings.insert(
            id.to_owned(),
            Holding {
                ephemeral,
                ports: ports.clone(),
            },
        );
        Ok(Restored {
            ephemeral,
            ports,
            warnings,
        })
    }

    /// Gives container `id` a new set of non-ephemeral ports; on failure it keeps
    /// its old ones.
    pub fn replace(&mut self, id: &str, ports: &[PortRange]) -> anyhow::Result<()> {
        if !self.holdings.contains_key(id) {
            refuse!(NotFound, "no container {id}; see `netiso container list`");
        }
        self.check(id, ports)?;
        if let Some(held) = self.holdings.get_mut(id) {
            held.ports = ports.to_vec();
        }
        Ok(())
    }

    /// Frees everything container `id` holds. Releasing an unknown id is harmless.
    pub fn release(&mut self, id: &str) {
        if let Some(held) = self.holdings.remove(id) {
            self.ephemeral.deallocate(held.ephemeral);
        }
    }

    /// How many containers the ephemeral pool can hold.
    pub fn capacity(&self) -> usize {
        self.ephemeral.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(begin: u16, end: u16) -> PortRange {
        PortRange::new(begin, end).unwrap()
    }

    fn ledger() -> PortLedger {
        PortLedger::new(
            vec![range(31000, 32000)],
            EphemeralAllocator::new(vec![range(32768, 32831)], 16).unwrap(),
        )
    }

    #[test]
    fn reserves_disjoint_ports_and_ephemeral_blocks() {
        let mut ledger = ledger();
        assert_eq!(
            ledger.reserve("a", &[range(31000, 31099)]).unwrap(),
            range(32768, 32783)
        );
        assert_eq!(
            ledger.reserve("b", &[range(31100, 31100)]).unwrap(),
            range(32784, 32799)
        );
        let error = ledger.reserve("c", &[range(31050, 31200)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ports [31050-31200] overlap ports of container a"
        );
        // A refused request takes nothing: the next block is still free.
        assert_eq!(ledger.reserve("c", &[]).unwrap(), range(32800, 32815));
    }

    #[test]
    fn refuses_ports_the_agent_does_not_manage_or_asked_twice() {
        let mut ledger = ledger();
        let error = ledger.reserve("a", &[range(30000, 31000)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Some non-ephemeral ports specified in [30000-31000] are not managed by the agent; it manages [31000-32000]"
        );
        let error = ledger
            .reserve("a", &[range(31000, 31010), range(31010, 31020)])
            .unwrap_err();
        assert_eq!(error.to_string(), "port 31010 is requested twice");
        assert!(ledger.reserve("a", &[]).is_ok());
        assert!(ledger.reserve("a", &[]).is_err(), "one holding per id");
    }

    #[test]
    fn replacing_keeps_own_ports_and_refuses_others() {
        let mut ledger = ledger();
        ledger.reserve("a", &[range(31000, 31099)]).unwrap();
        ledger.reserve("b", &[range(31100, 31199)]).unwrap();
        // Its own ports do not conflict with themselves.
        ledger.replace("a", &[range(31000, 31049)]).unwrap();
        assert!(ledger.replace("a", &[range(31150, 31150)]).is_err());
        // The refused replacement left a's ports as they were: b cannot take them.
        assert!(ledger.check("b", &[range(31000, 31000)]).is_err());
        // Ports a gave up are free for others.
        ledger.replace("b", &[range(31050, 31199)]).unwrap();
        assert!(ledger.replace("nobody", &[]).is_err());
    }

    #[test]
    fn releasing_frees_ports_and_the_ephemeral_block() {
        let mut ledger = ledger();
        let first = ledger.reserve("a", &[range(31000, 31099)]).unwrap();
        ledger.release("a");
        ledger.release("a");
        assert_eq!(ledger.reserve("b", &[range(31000, 31099)]).unwrap(), first);
    }

    #[test]
    fn restoring_takes_recorded_blocks_and_reports_foreign_ones() {
        let mut ledger = ledger();
        let a = ledger
            .restore("a", range(32784, 32799), &[range(31000, 31099)])
            .unwrap();
        assert_eq!(
            (a.ephemeral, a.ports, a.warnings.len()),
            (range(32784, 32799), vec![range(31000, 31099)], 0)
        );
        // A block of other flags is kept with a warning.
        let b = ledger.restore("b", range(40000, 40015), &[]).unwrap();
        assert_eq!(b.ephemeral, range(40000, 40015));
        assert!(b.warnings[0].contains("kept, outside the allocator"));
        // New containers get the blocks left free.
        assert_eq!(ledger.reserve("d", &[]).unwrap(), range(32768, 32783));
        assert_eq!(ledger.capacity(), 4);
    }

    #[test]
    fn restoring_a_conflict_keeps_the_container_without_what_others_hold() {
        let mut ledger = ledger();
        ledger
            .restore("a", range(32784, 32799), &[range(31000, 31099)])
            .unwrap();
        // c's records clash with a: ports 31050 and 31099, and the whole ephemeral range.
        let c = ledger
            .restore(
                "c",
                range(32784, 32799),
                &[range(31050, 31050), range(31099, 31101)],
            )
            .unwrap();
        assert_eq!(c.ports, vec![range(31100, 31101)]);
        assert_eq!(c.ephemeral, range(32768, 32783), "a fresh block");
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("port 31050 is also recorded for container a"));
        // What c was given is its: nobody else gets it.
        assert!(ledger.check("d", &[range(31100, 31100)]).is_err());
        assert_eq!(ledger.reserve("d", &[]).unwrap(), range(32800, 32815));
    }
}
