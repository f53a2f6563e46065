//! The control API's client, which the CLI uses: one HTTP/JSON request over the
//! agent's Unix socket, or one streamed answer.
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
    let socket: PathBuf = socket.to_owned();
    let path = path.to_owned();
    runtime()?.block_on(async move {
        let response = send(&socket, method, &path, body).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the agent answered {status} with no JSON"))?;
        if !status.is_success() {
            return Err(refused(status, &value));
        }
        Ok(value)
    })
}

/// Client side of a streamed answer (`GET /v1/monitor`): calls `on_line` with each
/// line the agent sends, after `on_start` once the agent accepted, until the agent
/// ends the stream (an error: it stopped) or `on_line` fails.
pub fn stream(
    socket: &Path,
    path: &str,
    on_start: impl FnOnce(),
    mut on_line: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let response = send(socket, Method::GET, path, None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.into_body().collect().await?.to_bytes();
            let value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(refused(status, &value));
        }
        on_start();
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                on_line(&line[..end])?;
            }
        }
        Err(refusal(
            Failure::Unavailable,
            "the agent ended the stream (it stopped?)",
        ))
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn send(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
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
    Ok(sender.send_request(request).await?)
}

/// An error answer as a refusal of its status's kind, with the agent's message.
fn refused(status: hyper::StatusCode, answer: &serde_json::Value) -> anyhow::Error {
    refusal(
        Failure::from_status(status.as_u16()),
        answer["error"]
            .as_str()
            .unwrap_or("the agent refused the request"),
    )
}
