//! The CNI plugin. A runtime runs the `netiso` binary (installed in its CNI bin
//! directory, type `netiso`) with `CNI_COMMAND` set; the binary then acts as the plugin
//! instead of the CLI. The plugin keeps no state: it is a client of the agent's
//! control API, and each attachment is a container of the agent, keyed by (network,
//! `CNI_CONTAINERID`, `CNI_IFNAME`) and recovered, listed and counted like any other.
pub mod config;
pub mod error;
pub mod result;

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use hyper::Method;
use serde_json::{Value, json};

use self::{
    config::{CniArgs, NetworkConfig, SUPPORTED_VERSIONS},
    error::{CniError, code},
};
use crate::{
    control::{
        client,
        model::{CniAttachment, ContainerInfo, CreateRequest, HostInfo},
    },
    failure::Failure,
};

/// Runs the plugin if a runtime invoked the binary as one (`CNI_COMMAND` is set).
pub fn run_if_invoked() -> Option<ExitCode> {
    let command = std::env::var("CNI_COMMAND").ok()?;
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&command, &stdin),
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            format!("reading stdin: {e}"),
        )),
    };
    let mut stdout = std::io::stdout().lock();
    Some(match outcome {
        Ok(Some(answer)) => {
            let _ = writeln!(stdout, "{answer}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            let mut answer = json!(error);
            answer["cniVersion"] = json!(asked_version(&stdin));
            let _ = writeln!(stdout, "{answer}");
            let _ = writeln!(std::io::stderr(), "netiso CNI {command}: {error}");
            ExitCode::FAILURE
        }
    })
}

/// The version the runtime asked for on stdin if the plugin speaks it, else the
/// latest.
fn asked_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned())
}

/// One CNI command; `Some` is the JSON to print.
fn run(command: &str, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        return Ok(Some(version(stdin)));
    }
    let config = NetworkConfig::parse(stdin)?;
    match command {
        "ADD" => add(&config, &Environment::read(true)?).map(Some),
        "DEL" => del(&config, &Environment::read(false)?).map(|()| None),
        "CHECK" => {
            require_version(&config, command, "0.4.0")?;
            check(&config, &Environment::read(true)?).map(|()| None)
        }
        "STATUS" => {
            require_version(&config, command, "1.1.0")?;
            status(&config).map(|()| None)
        }
        "GC" => {
            require_version(&config, command, "1.1.0")?;
            gc(&config).map(|()| None)
        }
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "CNI_COMMAND '{other}' is unknown; netiso answers ADD, DEL, CHECK, STATUS, GC and VERSION"
            ),
        )),
    }
}

/// VERSION: every version the plugin speaks, answered in the one asked for (even
/// with dummy environment values, as runtimes send).
fn version(stdin: &[u8]) -> Value {
    json!({ "cniVersion": asked_version(stdin), "supportedVersions": SUPPORTED_VERSIONS })
}

fn require_version(config: &NetworkConfig, command: &str, since: &str) -> Result<(), CniError> {
    if config.version_at_least(since) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{command} needs CNI version {since} or later; the configuration says {}",
                config.cni_version
            ),
        ))
    }
}

/// The `CNI_*` variables of ADD, DEL and CHECK.
struct Environment {
    container_id: String,
    /// Empty when a runtime deletes after the namespace is gone (containerd does).
    netns: PathBuf,
    ifname: String,
    args: CniArgs,
}

impl Environment {
    fn read(needs_netns: bool) -> Result<Self, CniError> {
        let var = |name: &str, required: bool| -> Result<String, CniError> {
            match std::env::var(name) {
                Ok(value) if !value.is_empty() || !required => Ok(value),
                _ if !required => Ok(String::new()),
                _ => Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("{name} is not set; a CNI runtime sets it"),
                )),
            }
        };
        Ok(Self {
            container_id: var("CNI_CONTAINERID", true)?,
            netns: PathBuf::from(var("CNI_NETNS", needs_netns)?),
            ifname: var("CNI_IFNAME", true)?,
            args: CniArgs::parse(&var("CNI_ARGS", false)?)?,
        })
    }

    fn attachment(&self, config: &NetworkConfig) -> CniAttachment {
        CniAttachment {
            network: config.name.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

fn agent(
    config: &NetworkConfig,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, CniError> {
    client::call(&config.socket(), method, path, body).map_err(|e| CniError::from_agent(&e))
}

fn host(config: &NetworkConfig) -> Result<HostInfo, CniError> {
    let answer = agent(config, Method::GET, "/v1/host", None)?;
    decode(answer)
}

fn decode<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, CniError> {
    serde_json::from_value(answer).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the agent's answer is not what this plugin expects ({e}); are the plugin and the agent the same version?"),
        )
    })
}

/// The agent's container of this attachment, if it has one.
fn attached(
    config: &NetworkConfig,
    attachment: &CniAttachment,
) -> Result<Option<ContainerInfo>, CniError> {
    let path = format!("/v1/containers/{}", attachment.agent_id());
    match client::call(&config.socket(), Method::GET, &path, None) {
        Ok(answer) => {
            let container: ContainerInfo = decode(answer)?;
            // An id is a hash: only a container made for this very key is it.
            Ok((container.attachment.as_ref() == Some(attachment)).then_some(container))
        }
        Err(e) if Failure::of(&e) == Failure::NotFound => Ok(None),
        Err(e) => Err(CniError::from_agent(&e)),
    }
}

/// ADD: the agent adopts the runtime's namespace and builds in it what
/// `container create --netns` builds, with the interface the runtime names.
fn add(config: &NetworkConfig, env: &Environment) -> Result<Value, CniError> {
    let host = host(config)?;
    let (ports, port_mappings) = config.ports(&env.args, &host)?;
    let attachment = env.attachment(config);
    let mut labels: std::collections::BTreeMap<String, String> = env
        .args
        .labels()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(aliases) = config.aliases() {
        labels.insert("aliases".into(), aliases);
    }
    let request = CreateRequest {
        id: attachment.agent_id(),
        ports,
        netns: Some(env.netns.clone()),
        pid: None,
        labels,
        cpus: None,
        interface: Some(env.ifname.clone()),
        attachment: Some(attachment),
        bandwidth: config
            .runtime_config
            .bandwidth
            .as_ref()
            .map(config::BandwidthEntry::limits),
        port_mappings,
    };
    let body = serde_json::to_value(&request).expect("a request serializes");
    let container: ContainerInfo =
        decode(agent(config, Method::POST, "/v1/containers", Some(body))?)?;
    let made = result::Attachment {
        container: &container,
        host: &host,
        ifname: &env.ifname,
        netns: &env.netns,
    };
    Ok(result::result(
        &made,
        &config.cni_version,
        config.dns.as_ref(),
    ))
}

/// DEL: removes the attachment; succeeds when there is none (already deleted, a
/// failed ADD, a namespace that is gone, an empty `CNI_NETNS`).
fn del(config: &NetworkConfig, env: &Environment) -> Result<(), CniError> {
    let attachment = env.attachment(config);
    if attached(config, &attachment)?.is_some() {
        destroy(config, &attachment.agent_id())?;
    }
    Ok(())
}

fn destroy(config: &NetworkConfig, id: &str) -> Result<(), CniError> {
    agent(
        config,
        Method::DELETE,
        &format!("/v1/containers/{id}"),
        None,
    )
    .map(drop)
}

/// CHECK: the attachment exists as ADD made it.
fn check(config: &NetworkConfig, env: &Environment) -> Result<(), CniError> {
    let attachment = env.attachment(config);
    let Some(container) = attached(config, &attachment)? else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "netiso has no attachment of {} on network {} as {}",
                env.container_id, config.name, env.ifname
            ),
        ));
    };
    if container.interface.as_deref() != Some(env.ifname.as_str()) {
        return Err(CniError::new(
            code::CHECK_FAILED,
            format!(
                "the attachment's interface is {:?}, not {}",
                container.interface, env.ifname
            ),
        ));
    }
    // The agent looks at the kernel: interface, addresses, routes, map entries and
    // programs.
    let path = format!("/v1/containers/{}/check", container.id);
    match client::call(&config.socket(), Method::GET, &path, None) {
        Ok(_) => Ok(()),
        Err(e) if Failure::of(&e) == Failure::Conflict => {
            Err(CniError::new(code::CHECK_FAILED, format!("{e:#}")))
        }
        Err(e) => Err(CniError::from_agent(&e)),
    }
}

/// STATUS: ready when the agent answers (it attaches its datapath before it serves).
fn status(config: &NetworkConfig) -> Result<(), CniError> {
    host(config).map(drop).map_err(|e| {
        CniError::new(
            code::NOT_AVAILABLE,
            format!("the netiso agent cannot take attachments: {}", e.msg),
        )
    })
}

/// GC: removes this network's attachments the runtime no longer has; containers made
/// otherwise and other networks' attachments are left alone.
fn gc(config: &NetworkConfig) -> Result<(), CniError> {
    let containers: Vec<ContainerInfo> =
        decode(agent(config, Method::GET, "/v1/containers", None)?)?;
    let stale = containers.iter().filter(|c| {
        c.attachment.as_ref().is_some_and(|a| {
            a.network == config.name
                && !config
                    .valid_attachments
                    .iter()
                    .any(|v| v.container_id == a.container_id && v.ifname == a.ifname)
        })
    });
    let mut failures = Vec::new();
    for container in stale {
        if let Err(error) = destroy(config, &container.id) {
            failures.push(format!("{}: {}", container.id, error.msg));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("could not remove {}", failures.join("; ")),
        ))
    }
}
