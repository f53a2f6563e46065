//! What containers may reach on the host, and the bounds of the agent's two servers.
use std::{str::FromStr, time::Duration};

use anyhow::bail;
use clap::Args;

use super::units::MesosDuration;
use crate::ports::{PortRange, parse_list};

/// Host services containers reach, and server bounds.
#[derive(Clone, Debug, Args)]
pub struct ServerFlags {
    /// Host services containers may reach through the host's address and 127.0.0.1
    /// (ports no container owns): `all` (as with Mesos; the agent's own HTTP port
    /// excepted), `none`, or a list like `22,8000-8100` (the agent's HTTP port only if
    /// listed).
    #[arg(
        long = "container-host-ports",
        alias = "container_host_ports",
        value_name = "all|none|PORTS",
        default_value = "all"
    )]
    pub container_host_ports: HostPorts,

    /// Most connections each of the agent's servers (HTTP and control API) serves at
    /// once; more wait until one ends.
    #[arg(
        long = "http-max-connections",
        alias = "http_max_connections",
        value_name = "N",
        default_value_t = 256
    )]
    pub max_connections: usize,

    /// How long a client may take to send a request, headers and body, and how long
    /// an idle connection is kept (Mesos duration, like 10secs).
    #[arg(
        long = "http-timeout",
        alias = "http_timeout",
        value_name = "DURATION",
        default_value = "10secs"
    )]
    pub timeout: MesosDuration,
}

impl ServerFlags {
    /// Checks the bounds make sense.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            bail!("--http_max_connections must be at least 1");
        }
        if self.timeout.0 < Duration::from_millis(100) {
            bail!(
                "--http_timeout must be at least 100ms; got {:?}",
                self.timeout.0
            );
        }
        Ok(())
    }
}

/// Which host ports containers may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPorts {
    All,
    None,
    Only(Vec<PortRange>),
}

impl FromStr for HostPorts {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text.trim() {
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            list => {
                let ranges = parse_list(list).map_err(|e| {
                    anyhow::anyhow!(
                        "--container_host_ports takes all, none or ports like 22,8000-8100: {e}"
                    )
                })?;
                if ranges.is_empty() {
                    bail!("--container_host_ports takes all, none or ports like 22,8000-8100");
                }
                Ok(Self::Only(ranges))
            }
        }
    }
}

impl HostPorts {
    /// Whether containers may not reach host port `port`; `agent_port`, the agent's
    /// own HTTP port, is closed unless listed.
    pub fn closed(&self, port: u16, agent_port: u16) -> bool {
        match self {
            HostPorts::All => port == agent_port,
            HostPorts::None => true,
            HostPorts::Only(ranges) => !ranges.iter().any(|r| r.contains(port)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_parse_and_close_the_agents_port_unless_listed() {
        let all: HostPorts = "all".parse().unwrap();
        assert!(all.closed(5051, 5051));
        assert!(!all.closed(22, 5051));
        let none: HostPorts = "none".parse().unwrap();
        assert!(none.closed(22, 5051));
        let some: HostPorts = "22,8000-8100,5051".parse().unwrap();
        assert!(!some.closed(22, 5051) && !some.closed(8050, 5051) && !some.closed(5051, 5051));
        assert!(some.closed(23, 5051));
        let error = "22,nope".parse::<HostPorts>().unwrap_err().to_string();
        assert!(
            error.starts_with("--container_host_ports takes all, none or ports"),
            "{error}"
        );
        assert!(",".parse::<HostPorts>().is_err());
    }
}
