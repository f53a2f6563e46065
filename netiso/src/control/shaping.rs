//! How a container is shaped: which limits it gets, from the agent's rate flags and
//! the limits of its own (CNI's bandwidth), on create and when the flags or its CPUs
//! change.
use super::model::Bandwidth;
use crate::{
    failure::refuse,
    tc::{EgressFlows, HtbConfig, RatePolicy},
};

/// How containers are shaped: the rate policy, whether the kernel has fq_codel for
/// the limits' leaves, and the flows containers get with unique egress flows.
#[derive(Clone, Debug, Default)]
pub struct Shaping {
    pub rates: RatePolicy,
    pub fq_codel: bool,
    pub egress_flows: Option<EgressFlows>,
}

/// A direction's limit: `None` is unshaped.
pub(super) type Limits = (Option<HtbConfig>, Option<HtbConfig>);

impl Shaping {
    /// The (egress, ingress) limits of a new container with `cpus` and limits of its
    /// own, `bandwidth`.
    pub(super) fn new_limits(&self, cpus: Option<f64>, bandwidth: Option<&Bandwidth>) -> Limits {
        let flags = (
            self.rates.egress.limit(cpus),
            self.rates.ingress.limit(cpus),
        );
        with_bandwidth(flags, bandwidth)
    }

    /// The limits of an existing container with `cpus`: egress follows the agent's
    /// flags; ingress reaches a container created without an ingress limit only if
    /// existing containers are to be isolated (Mesos's Upgrade semantics).
    pub(super) fn existing_limits(
        &self,
        cpus: Option<f64>,
        had_ingress_limit: bool,
        bandwidth: Option<&Bandwidth>,
    ) -> Limits {
        let ingress = if had_ingress_limit || self.rates.ingress_isolate_existing_containers {
            self.rates.ingress.limit(cpus)
        } else {
            None
        };
        with_bandwidth((self.rates.egress.limit(cpus), ingress), bandwidth)
    }
}

/// The agent's limits `flags`, with the directions a container set itself replaced.
fn with_bandwidth(flags: Limits, bandwidth: Option<&Bandwidth>) -> Limits {
    let (egress, ingress) = flags;
    match bandwidth {
        Some(own) => (own.egress.or(egress), own.ingress.or(ingress)),
        None => (egress, ingress),
    }
}

/// Refuses limits of a container's own that htb cannot have.
pub(super) fn check_bandwidth(bandwidth: &Bandwidth) -> anyhow::Result<()> {
    for (direction, limit) in [
        ("egress", &bandwidth.egress),
        ("ingress", &bandwidth.ingress),
    ] {
        if limit.as_ref().is_some_and(|l| l.rate == 0) {
            refuse!(Invalid, "the {direction} rate must be above 0 bytes/s");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tc::rate_policy::DirectionPolicy;

    fn shaping(isolate_existing: bool) -> Shaping {
        let per_cpu = |rate| DirectionPolicy {
            per_cpu: Some(rate),
            minimum: Some(0),
            ..Default::default()
        };
        Shaping {
            rates: RatePolicy {
                egress: per_cpu(1000),
                ingress: per_cpu(2000),
                ingress_isolate_existing_containers: isolate_existing,
            },
            ..Default::default()
        }
    }

    fn rates(limits: Limits) -> (Option<u64>, Option<u64>) {
        (limits.0.map(|l| l.rate), limits.1.map(|l| l.rate))
    }

    #[test]
    fn new_containers_get_both_limits_and_existing_ones_follow_mesos_upgrade_rules() {
        let keep = shaping(false);
        assert_eq!(
            rates(keep.new_limits(Some(2.0), None)),
            (Some(2000), Some(4000))
        );
        // A container without an ingress limit keeps none unless existing containers
        // are to be isolated; one with a limit follows the new rate.
        assert_eq!(
            rates(keep.existing_limits(Some(3.0), false, None)),
            (Some(3000), None)
        );
        assert_eq!(
            rates(keep.existing_limits(Some(3.0), true, None)),
            (Some(3000), Some(6000))
        );
        assert_eq!(
            rates(shaping(true).existing_limits(Some(1.0), false, None)),
            (Some(1000), Some(2000))
        );
        assert_eq!(
            rates(Shaping::default().new_limits(Some(8.0), None)),
            (None, None)
        );
    }
}
