//! Sysctls of the calling thread's network namespace (`/proc/sys/net/…`).
use anyhow::Context as _;

/// Writes sysctl `key` (dotted, like `net.ipv4.ip_local_port_range`).
pub fn write(key: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path(key), value).with_context(|| format!("setting {key} = {value}"))
}

/// Reads sysctl `key`, trimmed.
pub fn read(key: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path(key))
        .with_context(|| format!("reading {key}"))?
        .trim()
        .to_owned())
}

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}
