//! `netiso monitor`: the datapath's drops, live, as the agent streams them.
use anyhow::Context as _;

use crate::{control::client, datapath::drop_events::DropRecord};

/// Prints every drop the agent reports (of container `id`, for `reason`, if given)
/// as a line, or as the agent's JSON with `json`, until interrupted.
pub fn run(
    socket: &std::path::Path,
    id: Option<&str>,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut query = Vec::new();
    if let Some(id) = id {
        query.push(format!("container={id}"));
    }
    if let Some(reason) = reason {
        query.push(format!("reason={reason}"));
    }
    let path = format!("/v1/monitor?{}", query.join("&"));
    let mut stdout = std::io::stdout().lock();
    client::stream(
        socket,
        &path,
        || eprintln!("listening for dropped packets (Ctrl-C to stop)"),
        |line| {
            if json {
                stdout.write_all(line)?;
            } else {
                let record: DropRecord = serde_json::from_slice(line)
                    .context("the agent sent a drop event this netiso cannot read")?;
                stdout.write_all(record.to_line().as_bytes())?;
            }
            stdout.write_all(b"\n")?;
            // Live output: each event as it comes, even into a pipe.
            stdout.flush()?;
            Ok(())
        },
    )
}
