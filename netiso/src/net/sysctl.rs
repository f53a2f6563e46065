//! Sysctls of the calling thread's network namespace (`/proc/sys/net/…`).
use std::collections::BTreeMap;

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

/// Writes sysctls and, if asked, remembers what each was before its first change, so
/// that a namespace netiso only borrows (an adopted one) can be given back as it was.
#[derive(Debug, Default)]
pub struct SysctlChanges {
    remember: bool,
    /// Each changed key's value before netiso's first change.
    previous: BTreeMap<String, String>,
}

impl SysctlChanges {
    /// Changes that remember the previous values (`remember`) or not.
    pub fn new(remember: bool) -> Self {
        Self {
            remember,
            previous: BTreeMap::new(),
        }
    }

    /// Sets `key` to `value`, remembering its value before.
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        if self.remember && !self.previous.contains_key(key) {
            let before = read(key)?;
            if before.split_whitespace().eq(value.split_whitespace()) {
                return Ok(());
            }
            self.previous.insert(key.to_owned(), before);
        }
        write(key, value)
    }

    /// What was there before, to give to [`restore`].
    pub fn into_previous(self) -> BTreeMap<String, String> {
        self.previous
    }
}

/// Puts back the values `previous` remembered; every one is tried, and the first
/// failure is returned.
pub fn restore(previous: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut first_error = None;
    for (key, value) in previous {
        if let Err(error) = write(key, value) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}
