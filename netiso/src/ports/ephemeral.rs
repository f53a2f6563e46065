//! Containers' ephemeral ranges, cut from the agent's `ephemeral_ports` pool as Mesos
//! cuts them.
use std::collections::BTreeSet;

use anyhow::bail;

use super::PortRange;
use crate::failure::{Failure, refusal};

/// Hands out containers' ephemeral ranges, as Mesos's `EphemeralPortsAllocator`
/// does: every range is `per_container` ports (a power of two), aligned to its size,
/// cut from the agent's `ephemeral_ports` pool in order.
#[derive(Clone, Debug)]
pub struct EphemeralAllocator {
    pool: Vec<PortRange>,
    per_container: u32,
    /// Begin ports of the ranges handed out.
    used: BTreeSet<u16>,
}

impl EphemeralAllocator {
    /// Checks `per_container` (Mesos's rules: a power of two, at least 16, no more
    /// than the pool) and makes an allocator.
    pub fn new(pool: Vec<PortRange>, per_container: u32) -> anyhow::Result<Self> {
        if !per_container.is_power_of_two() {
            bail!(
                "The number of ephemeral ports for each container ({per_container}) is not a power of 2; pass --ephemeral_ports_per_container such as 512 or 1024"
            );
        }
        if per_container < MIN_EPHEMERAL_PORTS {
            bail!(
                "Each container has only {per_container} ephemeral ports. The minimum required is: {MIN_EPHEMERAL_PORTS}"
            );
        }
        let size: u32 = pool.iter().map(PortRange::len).sum();
        if per_container > size {
            bail!(
                "Network Isolator is given ephemeral ports of size: {size}, but asked to allocate {per_container} ephemeral ports for a container; lower --ephemeral_ports_per_container or widen ephemeral_ports in --resources"
            );
        }
        Ok(Self {
            pool,
            per_container,
            used: BTreeSet::new(),
        })
    }

    /// Every aligned block of the pool, in order.
    fn blocks(&self) -> impl Iterator<Item = PortRange> + '_ {
        let n = self.per_container;
        self.pool.iter().flat_map(move |range| {
            let first = u32::from(range.begin).div_ceil(n) * n;
            (first..)
                .step_by(n as usize)
                .take_while(move |begin| begin + n - 1 <= u32::from(range.end))
                .map(move |begin| PortRange {
                    begin: begin as u16,
                    end: (begin + n - 1) as u16,
                })
        })
    }

    /// The first free block, now taken; fails when the pool is exhausted (Mesos's
    /// TooManyContainers).
    pub fn allocate(&mut self) -> anyhow::Result<PortRange> {
        let block = self
            .blocks()
            .find(|b| !self.used.contains(&b.begin))
            .ok_or_else(|| {
                refusal(
                    Failure::Unavailable,
                    format!(
                        "Failed to allocate ephemeral ports: all {} ranges of {} ports are in use; destroy a container or widen ephemeral_ports in --resources",
                        self.capacity(),
                        self.per_container
                    ),
                )
            })?;
        self.used.insert(block.begin);
        Ok(block)
    }

    /// Takes a block a recovered container already has; it must be a free block.
    pub fn allocate_exact(&mut self, range: PortRange) -> anyhow::Result<()> {
        if !self.blocks().any(|b| b == range) {
            bail!(
                "ephemeral range {range} is not one of the agent's blocks of {} ports",
                self.per_container
            );
        }
        if !self.used.insert(range.begin) {
            bail!("ephemeral range {range} is already in use");
        }
        Ok(())
    }

    /// Gives a block back. Freeing a block that is not in use is harmless.
    pub fn deallocate(&mut self, range: PortRange) {
        self.used.remove(&range.begin);
    }

    /// How many containers the pool can hold.
    pub fn capacity(&self) -> usize {
        self.blocks().count()
    }
}

/// Mesos's `MIN_EPHEMERAL_PORTS_SIZE`.
pub const MIN_EPHEMERAL_PORTS: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn range(begin: u16, end: u16) -> PortRange {
        PortRange::new(begin, end).unwrap()
    }

    #[test]
    fn ephemeral_blocks_are_aligned_like_mesos() {
        // The Mesos test fixture: ephemeral_ports:[30001-30999].
        let mut sixteen = EphemeralAllocator::new(vec![range(30001, 30999)], 16).unwrap();
        assert_eq!(sixteen.allocate().unwrap(), range(30016, 30031));
        assert_eq!(sixteen.allocate().unwrap(), range(30032, 30047));
        assert_eq!(sixteen.capacity(), 61);
        let mut big = EphemeralAllocator::new(vec![range(30001, 30999)], 512).unwrap();
        assert_eq!(big.allocate().unwrap(), range(30208, 30719));
        // ROOT_TooManyContainers: only one aligned block of 512 fits.
        let error = big.allocate().unwrap_err().to_string();
        assert_eq!(
            error,
            "Failed to allocate ephemeral ports: all 1 ranges of 512 ports are in use; destroy a container or widen ephemeral_ports in --resources"
        );
    }

    #[test]
    fn freed_blocks_are_reused_and_ranges_may_end_at_65535() {
        let mut top = EphemeralAllocator::new(vec![range(65024, 65535)], 256).unwrap();
        let first = top.allocate().unwrap();
        let second = top.allocate().unwrap();
        assert_eq!((first, second), (range(65024, 65279), range(65280, 65535)));
        assert!(top.allocate().is_err());
        top.deallocate(first);
        assert_eq!(top.allocate().unwrap(), first);
        top.deallocate(second);
        top.allocate_exact(second).unwrap();
        assert!(top.allocate_exact(second).is_err(), "never owned twice");
        assert!(
            top.allocate_exact(range(65030, 65285)).is_err(),
            "not a block"
        );
    }

    #[test]
    fn ports_per_container_follow_mesos_rules() {
        let pool = || vec![range(32768, 57344)];
        let message = |n| EphemeralAllocator::new(pool(), n).unwrap_err().to_string();
        assert_eq!(
            message(1000),
            "The number of ephemeral ports for each container (1000) is not a power of 2; pass --ephemeral_ports_per_container such as 512 or 1024"
        );
        assert_eq!(
            message(8),
            "Each container has only 8 ephemeral ports. The minimum required is: 16"
        );
        assert_eq!(
            message(32768),
            "Network Isolator is given ephemeral ports of size: 24577, but asked to allocate 32768 ephemeral ports for a container; lower --ephemeral_ports_per_container or widen ephemeral_ports in --resources"
        );
        // The documentation's example: 24 containers of 1024 ports.
        assert_eq!(
            EphemeralAllocator::new(pool(), 1024).unwrap().capacity(),
            24
        );
    }
}
