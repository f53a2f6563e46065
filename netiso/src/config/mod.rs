//! The agent's flags, with Mesos's spellings, and their validation at start-up.
//!
//! Every flag of Mesos's `network/port_mapping` isolator is accepted in its Mesos
//! spelling (`--ephemeral_ports_per_container`) and in kebab-case
//! (`--ephemeral-ports-per-container`). Everything that can be wrong is checked before
//! the agent touches the host, with one line saying what is wrong and what to do.
use anyhow::{Context as _, bail};

// The parsers' fuzz test lives with the tests, out of the product's folders.
mod flags;
#[cfg(test)]
#[path = "../../tests/unit/parser_fuzz.rs"]
mod fuzz;
mod rates;
pub mod resources;
pub mod servers;
pub mod units;

pub use flags::{AgentArgs, EgressFlags, IngressFlags, StatisticsFlags};
pub use rates::rate_policy;
pub use servers::ServerFlags;

use crate::ports::{EphemeralAllocator, PortLedger, PortRange};
use resources::Resources;
use units::Bytes;

/// The only isolator netiso is.
pub const PORT_MAPPING_ISOLATOR: &str = "network/port_mapping";
/// Ports below this are the host's well-known ports.
const WELL_KNOWN_PORTS: PortRange = PortRange {
    begin: 0,
    end: 1023,
};

/// The agent's port configuration, validated.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// Ports containers may be given (`ports` resource).
    pub non_ephemeral: Vec<PortRange>,
    pub ephemeral: EphemeralAllocator,
    pub cpus: Option<f64>,
}

impl PortConfig {
    /// The ledger that hands these ports out.
    pub fn ledger(&self) -> PortLedger {
        PortLedger::new(self.non_ephemeral.clone(), self.ephemeral.clone())
    }
}

/// Checks `--isolation`.
pub fn check_isolation(isolation: &str) -> anyhow::Result<()> {
    for isolator in isolation
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        if isolator != PORT_MAPPING_ISOLATOR {
            bail!(
                "Unknown or unsupported isolator: {isolator}; netiso provides {PORT_MAPPING_ISOLATOR} only"
            );
        }
    }
    Ok(())
}

/// Checks the port resources against each other, the well-known ports and the host's
/// own ephemeral range (`host_ephemeral`, its `ip_local_port_range`).
pub fn check_ports(args: &AgentArgs, host_ephemeral: PortRange) -> anyhow::Result<PortConfig> {
    let resources = Resources::parse(args.resources.as_deref().unwrap_or_default())?;
    let ephemeral = resources.ephemeral_ports.clone().with_context(|| {
        "Ephemeral ports are not specified: add ephemeral_ports:[a-b] to --resources".to_owned()
    })?;
    let overlap = |a: &[PortRange], b: &[PortRange]| {
        a.iter()
            .find_map(|x| b.iter().find(|y| x.overlaps(y)).map(|y| (*x, *y)))
    };
    if let Some((e, p)) = overlap(&ephemeral, &resources.ports) {
        bail!(
            "The specified ephemeral ports [{e}] intersect with the specified non-ephemeral ports [{p}]; make the ranges in --resources disjoint"
        );
    }
    for (what, ranges) in [
        ("ephemeral", &ephemeral),
        ("non-ephemeral", &resources.ports),
    ] {
        if let Some((r, _)) = overlap(ranges, &[WELL_KNOWN_PORTS]) {
            bail!(
                "The specified {what} ports [{r}] intersect with well known ports [0-1023]; use ports from 1024 up"
            );
        }
        if let Some((r, _)) = overlap(ranges, &[host_ephemeral]) {
            bail!(
                "The specified {what} ports [{r}] intersect with the ephemeral ports used by the host [{host_ephemeral}]; move the host's range (sysctl net.ipv4.ip_local_port_range) or the ports in --resources"
            );
        }
    }
    Ok(PortConfig {
        non_ephemeral: resources.ports,
        ephemeral: EphemeralAllocator::new(ephemeral, args.ephemeral_ports_per_container)?,
        cpus: resources.cpus,
    })
}

/// Checks the rate flags of one direction (`egress` or `ingress`), as Mesos does.
fn check_rates(
    direction: &str,
    fixed: Option<Bytes>,
    per_cpu: Option<&str>,
    minimum: Option<Bytes>,
    maximum: Option<Bytes>,
    cpus: Option<f64>,
) -> anyhow::Result<()> {
    if fixed.is_some() && per_cpu.is_some() {
        bail!(
            "Cannot specify both {direction}_rate_limit_per_container and {direction}_rate_per_cpu."
        );
    }
    if let (Some(min), Some(max)) = (minimum, maximum)
        && min > max
    {
        bail!("Minimum {direction} rate limit cannot be greater than maximum {direction} rate.");
    }
    if let Some(per_cpu) = per_cpu {
        if per_cpu != "auto" {
            per_cpu
                .parse::<Bytes>()
                .with_context(|| format!("Bad option for '{direction}_rate_per_cpu' flag"))?;
        }
        if cpus.is_none() {
            bail!(
                "CPUs resource has to be specified to determine per CPU {direction} rate limit: add cpus:N to --resources"
            );
        }
    }
    Ok(())
}

/// Checks every flag that needs no access to the host; `host_ephemeral` is the host's
/// `ip_local_port_range`.
pub fn check(args: &AgentArgs, host_ephemeral: PortRange) -> anyhow::Result<PortConfig> {
    check_isolation(&args.isolation)?;
    let ports = check_ports(args, host_ephemeral)?;
    args.servers.check()?;
    let egress = &args.egress;
    check_rates(
        "egress",
        egress.rate_limit_per_container,
        egress.rate_per_cpu.as_deref(),
        egress.minimum,
        egress.maximum,
        ports.cpus,
    )?;
    crate::tc::FlowQdiscParent::parse(&egress.flow_classifier_parent)?;
    let ingress = &args.ingress;
    check_rates(
        "ingress",
        ingress.rate_limit_per_container,
        ingress.rate_per_cpu.as_deref(),
        ingress.minimum,
        ingress.maximum,
        ports.cpus,
    )?;
    let stats = &args.statistics;
    if stats.rates {
        let (Some(window), Some(interval)) = (stats.rate_window, stats.rate_interval) else {
            bail!(
                "Window size and sampling interval for rate statistics are required: pass --network_rate_statistics_window and --network_rate_statistics_interval"
            );
        };
        if window <= interval {
            bail!("Rate statistics window size should be bigger than the sampling interval");
        }
        if interval.0 < std::time::Duration::from_millis(20) {
            bail!("Rate statistics interval should not be smaller than 20ms");
        }
    }
    Ok(ports)
}

/// The host's own ephemeral range (`net.ipv4.ip_local_port_range` of the calling
/// thread's network namespace).
pub fn host_ephemeral_range() -> anyhow::Result<PortRange> {
    let text = crate::net::sysctl::read("net.ipv4.ip_local_port_range")
        .context("Failed to read host ip_local_port_range")?;
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(begin)), Some(Ok(end))) => PortRange::new(begin, end),
        _ => bail!("Unexpected format from host ip_local_port_range: '{text}'"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn args(flags: &[&str]) -> AgentArgs {
        Cli::try_parse_from(std::iter::once("agent").chain(flags.iter().copied()))
            .expect("flags parse")
            .agent
    }

    const HOST: PortRange = PortRange {
        begin: 57345,
        end: 60999,
    };

    fn error(flags: &[&str]) -> String {
        format!("{:#}", check(&args(flags), HOST).unwrap_err())
    }

    /// The complete command line of the Mesos documentation.
    const MESOS_DOC: &[&str] = &[
        "--isolation=network/port_mapping",
        "--resources=ports:[31000-32000];ephemeral_ports:[32768-57344]",
        "--ephemeral_ports_per_container=1024",
        "--egress_rate_limit_per_container=37500KB",
        "--egress_unique_flow_per_container",
    ];

    #[test]
    fn the_mesos_documentation_command_line_is_accepted() {
        let parsed = args(MESOS_DOC);
        assert_eq!(
            parsed.egress.rate_limit_per_container,
            Some(Bytes(38_400_000))
        );
        assert!(parsed.egress.unique_flow_per_container);
        let ports = check(&parsed, HOST).unwrap();
        assert_eq!(ports.ephemeral.capacity(), 24);
    }

    #[test]
    fn kebab_case_and_mesos_spellings_are_the_same_flags() {
        let kebab = args(&[
            "--resources=ports:[31000-32000];ephemeral_ports:[30000-30999]",
            "--ephemeral-ports-per-container=16",
            "--egress-unique-flow-per-container=false",
            "--ingress_isolate_existing_containers=false",
        ]);
        assert_eq!(kebab.ephemeral_ports_per_container, 16);
        assert!(!kebab.egress.unique_flow_per_container);
        assert!(!kebab.ingress.isolate_existing_containers);
    }

    #[test]
    fn every_validation_says_what_is_wrong() {
        let base = "--resources=ports:[31000-32000];ephemeral_ports:[32768-57344]";
        assert_eq!(
            error(&["--isolation=network/cni"]),
            "Unknown or unsupported isolator: network/cni; netiso provides network/port_mapping only"
        );
        assert_eq!(
            error(&["--resources=ports:[31000-32000]"]),
            "Ephemeral ports are not specified: add ephemeral_ports:[a-b] to --resources"
        );
        assert_eq!(
            error(&["--resources=ports:[31000-33000];ephemeral_ports:[32768-57344]"]),
            "The specified ephemeral ports [32768-57344] intersect with the specified non-ephemeral ports [31000-33000]; make the ranges in --resources disjoint"
        );
        assert_eq!(
            error(&["--resources=ports:[1000-2000];ephemeral_ports:[32768-57344]"]),
            "The specified non-ephemeral ports [1000-2000] intersect with well known ports [0-1023]; use ports from 1024 up"
        );
        assert_eq!(
            error(&["--resources=ports:[31000-32000];ephemeral_ports:[32768-61439]"]),
            "The specified ephemeral ports [32768-61439] intersect with the ephemeral ports used by the host [57345-60999]; move the host's range (sysctl net.ipv4.ip_local_port_range) or the ports in --resources"
        );
        assert_eq!(
            error(&[base, "--ephemeral_ports_per_container=1000"]),
            "The number of ephemeral ports for each container (1000) is not a power of 2; pass --ephemeral_ports_per_container such as 512 or 1024"
        );
        assert_eq!(
            error(&[
                base,
                "--egress_rate_limit_per_container=1MB",
                "--egress_rate_per_cpu=1KB"
            ]),
            "Cannot specify both egress_rate_limit_per_container and egress_rate_per_cpu."
        );
        assert_eq!(
            error(&[
                base,
                "--minimum_ingress_rate_limit=2MB",
                "--maximum_ingress_rate_limit=1MB"
            ]),
            "Minimum ingress rate limit cannot be greater than maximum ingress rate."
        );
        assert_eq!(
            error(&[base, "--egress_rate_per_cpu=auto"]),
            "CPUs resource has to be specified to determine per CPU egress rate limit: add cpus:N to --resources"
        );
        assert_eq!(
            error(&[base, "--network_enable_rate_statistics"]),
            "Window size and sampling interval for rate statistics are required: pass --network_rate_statistics_window and --network_rate_statistics_interval"
        );
        assert_eq!(
            error(&[
                base,
                "--network_enable_rate_statistics",
                "--network_rate_statistics_window=5secs",
                "--network_rate_statistics_interval=10ms"
            ]),
            "Rate statistics interval should not be smaller than 20ms"
        );
    }

    #[test]
    fn byte_flags_refuse_bare_numbers_at_parse_time() {
        let parsed = Cli::try_parse_from(["agent", "--egress_rate_limit_per_container=1000"]);
        let message = parsed.err().expect("refused").to_string();
        assert!(
            message.contains("'1000' has no unit; write it like 37500KB"),
            "{message}"
        );
    }

    #[test]
    fn ranges_may_end_at_65535() {
        let parsed = args(&[
            "--resources=ports:[64000-64511];ephemeral_ports:[65024-65535]",
            "--ephemeral_ports_per_container=256",
        ]);
        let mut ports = check(&parsed, HOST).unwrap();
        assert_eq!(
            ports.ephemeral.allocate().unwrap().to_string(),
            "65024-65279"
        );
        assert_eq!(
            ports.ephemeral.allocate().unwrap().to_string(),
            "65280-65535"
        );
    }
}
