//! Running the CNI plugin exactly as runtimes do: the `netiso` binary with the `CNI_*`
//! environment and the network configuration on stdin, read back from stdout and the
//! exit status.

use serde_json::Value;

use crate::{agent::netiso_bin, netns::Netns};

/// What one run of the plugin gave: exit success, stdout as JSON (Null if empty),
/// stderr.
pub struct PluginRun {
    pub ok: bool,
    pub out: Value,
    pub err: String,
}

impl PluginRun {
    /// The error code of a failed run, checking the error's shape on the way.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {}", self.out);
        assert!(
            self.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.out
        );
        assert!(self.out["cniVersion"].is_string(), "{}", self.out);
        self.out["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {}", self.out))
    }
}

/// Runs the plugin in `ns` with only `CNI_COMMAND`, `CNI_PATH` and `env` set.
pub fn run_plugin(ns: &Netns, command: &str, env: &[(&str, &str)], stdin: &Value) -> PluginRun {
    let output = crate::netns::output_with_stdin(
        ns.command(netiso_bin())
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/opt/cni/bin")
            .envs(env.iter().copied()),
        stdin.to_string().as_bytes(),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    PluginRun {
        ok: output.status.success(),
        out: if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
        },
        err: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
