//! The control API's client, which the CLI uses: one HTTP/JSON request over the
//! agent's Unix socket.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::failure::{Failure, refusal};

/// Client side: sends one request to the agent at `socket` and returns the JSON it
/// answered; an error answer becomes a [`crate::failure::Refusal`] of the status's
/// kind with the agent's message.
pub fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket: PathBuf = socket.to_owned();
    runtime.block_on(async move {
        let stream = UnixStream::connect(&socket).await.map_err(|e| {
            refusal(
                Failure::Unavailable,
                format!(
                    "cannot reach the agent at {}: {e}; is `netiso agent` running? (set --api-socket or NETISO_API_SOCKET)",
                    socket.display()
                ),
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "netiso")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the agent answered {status} with no JSON"))?;
        if !status.is_success() {
            return Err(refusal(
                Failure::from_status(status.as_u16()),
                value["error"]
                    .as_str()
                    .unwrap_or("the agent refused the request"),
            ));
        }
        Ok(value)
    })
}
