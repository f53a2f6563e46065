//! The agent's `--resources`, in Mesos's syntax: `name:value` pairs separated by `;`,
//! ranges written `[a-b,c-d]`, e.g. `ports:[31000-32000];ephemeral_ports:[32768-57344]`.
use anyhow::{Context as _, bail};

use crate::ports::PortRange;

/// What netiso reads from `--resources`; other resources (mem, disk, …) are accepted
/// and left to other tools.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Non-ephemeral ports: what containers may be given.
    pub ports: Vec<PortRange>,
    /// The pool that containers' ephemeral ranges are cut from.
    pub ephemeral_ports: Option<Vec<PortRange>>,
    /// The host's CPUs for per-CPU rate scaling.
    pub cpus: Option<f64>,
}

impl Resources {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut resources = Resources::default();
        for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once(':').with_context(|| {
                format!("Failed to parse --resources: '{item}' is not name:value")
            })?;
            // A Mesos role, as in ports(*):[…], does not matter here.
            let name = name.split('(').next().unwrap_or(name).trim();
            match name {
                "ports" => {
                    resources.ports = parse_ranges(value)
                        .with_context(|| format!("Invalid ports resource '{value}'"))?;
                }
                "ephemeral_ports" => {
                    resources.ephemeral_ports =
                        Some(parse_ranges(value).with_context(|| {
                            format!("Invalid ephemeral ports resource '{value}'")
                        })?);
                }
                "cpus" => {
                    resources.cpus = Some(value.trim().parse().with_context(|| {
                        format!("Failed to parse --resources: cpus '{value}' is not a number")
                    })?);
                }
                _ => {}
            }
        }
        Ok(resources)
    }
}

/// Parses `[a-b,c-d]` into sorted ranges, refusing overlaps.
fn parse_ranges(text: &str) -> anyhow::Result<Vec<PortRange>> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .context("ranges are written in brackets, like [31000-32000]")?;
    let mut ranges = crate::ports::parse_list(inner)?;
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[0].overlaps(&pair[1]) {
            bail!("ranges {} and {} overlap", pair[0], pair[1]);
        }
    }
    if ranges.is_empty() {
        bail!("no range given");
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(begin: u16, end: u16) -> PortRange {
        PortRange::new(begin, end).unwrap()
    }

    #[test]
    fn parses_the_mesos_documentation_example() {
        let resources =
            Resources::parse("ports:[31000-32000];ephemeral_ports:[32768-57344]").unwrap();
        assert_eq!(resources.ports, vec![range(31000, 32000)]);
        assert_eq!(resources.ephemeral_ports, Some(vec![range(32768, 57344)]));
    }

    #[test]
    fn parses_the_mesos_test_fixture_with_other_resources_and_roles() {
        let resources = Resources::parse(
            "cpus:2;mem:1024;disk:1024;ephemeral_ports:[30001-30999];ports(*):[31000-32000,40000-40009]",
        )
        .unwrap();
        assert_eq!(resources.cpus, Some(2.0));
        assert_eq!(
            resources.ports,
            vec![range(31000, 32000), range(40000, 40009)]
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let error = format!("{:#}", Resources::parse("ports:31000-32000").unwrap_err());
        assert_eq!(
            error,
            "Invalid ports resource '31000-32000': ranges are written in brackets, like [31000-32000]"
        );
        let error = format!(
            "{:#}",
            Resources::parse("ephemeral_ports:[100-200,150-300]").unwrap_err()
        );
        assert_eq!(
            error,
            "Invalid ephemeral ports resource '[100-200,150-300]': ranges 100-200 and 150-300 overlap"
        );
    }
}
