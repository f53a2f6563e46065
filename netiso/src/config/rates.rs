//! The rate policy the agent's rate flags ask for (Mesos's spellings), resolved: `auto`
//! becomes the link's speed shared out over the agent's CPUs.
use anyhow::Context as _;

use super::{AgentArgs, EgressFlags, IngressFlags, units::Bytes};
use crate::tc::rate_policy::{DirectionPolicy, RatePolicy};

/// From the agent's flags; `cpus` is its `cpus` resource and `link_speed` the
/// public interface's speed in bytes/s (read only when `auto` needs it).
pub fn rate_policy(
    args: &AgentArgs,
    cpus: Option<f64>,
    link_speed: impl Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<RatePolicy> {
    let egress: &EgressFlags = &args.egress;
    let ingress: &IngressFlags = &args.ingress;
    let bytes = |b: Option<Bytes>| b.map(|b| b.0);
    let per_cpu = |direction: &str, flag: Option<&str>| -> anyhow::Result<Option<u64>> {
        match flag {
            None => Ok(None),
            Some("auto") => {
                let speed = match args.network_link_speed {
                    Some(speed) => speed.0,
                    None => link_speed()?,
                };
                let cpus = cpus.filter(|c| *c >= 1.0).with_context(|| {
                    format!(
                        "{direction}_rate_per_cpu=auto needs cpus:N (N at least 1) in --resources"
                    )
                })?;
                Ok(Some(speed / cpus.floor() as u64))
            }
            Some(value) => Ok(Some(value.parse::<Bytes>()?.0)),
        }
    };
    Ok(RatePolicy {
        egress: DirectionPolicy {
            fixed: bytes(egress.rate_limit_per_container),
            per_cpu: per_cpu("egress", egress.rate_per_cpu.as_deref())?,
            minimum: bytes(egress.minimum),
            maximum: bytes(egress.maximum),
            ceil: bytes(egress.ceil),
            burst: bytes(egress.burst),
        },
        ingress: DirectionPolicy {
            fixed: bytes(ingress.rate_limit_per_container),
            per_cpu: per_cpu("ingress", ingress.rate_per_cpu.as_deref())?,
            minimum: bytes(ingress.minimum),
            maximum: bytes(ingress.maximum),
            ceil: bytes(ingress.ceil),
            burst: bytes(ingress.burst),
        },
        ingress_isolate_existing_containers: ingress.isolate_existing_containers,
    })
}
