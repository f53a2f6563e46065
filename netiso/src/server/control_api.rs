//! The control API's server: HTTP/JSON over a Unix socket (mode 0600). Its client is
//! `crate::control::client`.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | /v1/containers | | `[ContainerInfo]` |
//! | GET | /v1/containers/ID | | `ContainerInfo` (404 if unknown) |
//! | GET | /v1/containers/ID/check | | `{"ok": true}`, or 409 naming what differs from how it was made |
//! | GET | /v1/host | | `HostInfo`: what containers share of the host |
//! | POST | /v1/containers | `CreateRequest` | 201, `ContainerInfo` |
//! | PUT | /v1/containers/ID | `{"ports"?: [{"begin","end"}], "cpus"?: N}` | 200, `ContainerInfo` |
//! | DELETE | /v1/containers/ID | | 200, `{"destroyed": ID}` (also when unknown; 500 if teardown failed, retry) |
//! | GET | /v1/statistics | | the `/monitor/statistics` array |
//! | GET | /v1/statistics/ID | | the same, for one container (404 if unknown) |
//! | GET | /v1/monitor[?container=ID][&reason=R] | | drop events as they happen: a stream of JSON lines (`drop_stream.rs`) |
//!
//! Errors answer `{"error": "…"}` with the status of their kind (`crate::failure`):
//! 400 invalid, 404 unknown container, 409 conflict (id or ports taken), 413 too large,
//! 503 exhausted or stopping (try again later), 500 internal (the kernel, the disk).
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Either, Full, LengthLimitError, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
};
use tokio::net::UnixListener;

use super::{
    StatisticsSource,
    connections::{self, Limits},
    drop_stream,
    response::{error, json, refused},
};
use crate::{
    control::{CreateRequest, ManagerHandle, RequestError, UpdateRequest},
    datapath::drop_events::DropEventReader,
};

/// Binds the control socket: mode 0600, its directory created, a stale socket (no
/// agent behind it) replaced, a live one refused.
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another agent is listening on {}; stop it or choose another --api-socket",
                path.display()
            );
        }
        fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the control socket non-blocking")?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves the control API on `listener` until the task is dropped.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    limits: Limits,
    manager: ManagerHandle,
    stats: StatisticsSource,
    drops: DropEventReader,
) -> anyhow::Result<()> {
    let listener = UnixListener::from_std(listener).context("serving the control socket")?;
    connections::serve(listener, limits, "control API", move |request| {
        let (manager, stats, drops) = (manager.clone(), stats.clone(), drops.clone());
        async move {
            if request.method() == Method::GET && request.uri().path() == "/v1/monitor" {
                drop_stream::start(request.uri().query(), &drops, &manager).await
            } else {
                route(request, &manager, &stats, limits)
                    .await
                    .map(Either::Left)
            }
        }
    })
    .await;
    Ok(())
}

async fn route(
    request: Request<Incoming>,
    manager: &ManagerHandle,
    stats: &StatisticsSource,
    limits: Limits,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/v1/containers") => answer(manager.list().await, StatusCode::OK),
        (Method::GET, "/v1/host") => answer(manager.host().await, StatusCode::OK),
        (Method::GET, path) if path.starts_with("/v1/containers/") => {
            let id = path.trim_start_matches("/v1/containers/");
            match id.strip_suffix("/check") {
                Some(id) => {
                    let checked = manager.check(id.to_owned()).await;
                    answer(
                        checked.map(|()| serde_json::json!({ "ok": true })),
                        StatusCode::OK,
                    )
                }
                None => answer(manager.get(id.to_owned()).await, StatusCode::OK),
            }
        }
        (Method::GET, "/v1/statistics") => statistics(stats, None).await,
        (Method::GET, path) if path.starts_with("/v1/statistics/") => {
            statistics(stats, Some(path.trim_start_matches("/v1/statistics/"))).await
        }
        (Method::POST, "/v1/containers") => {
            match read_json::<CreateRequest>(request, limits).await {
                Ok(create) => match create.check_sizes() {
                    Ok(()) => answer(manager.create(create).await, StatusCode::CREATED),
                    Err(too_big) => error(StatusCode::PAYLOAD_TOO_LARGE, too_big),
                },
                Err(refusal) => refusal,
            }
        }
        (Method::PUT, path) if path.starts_with("/v1/containers/") => {
            let id = path.trim_start_matches("/v1/containers/").to_owned();
            match read_json::<UpdateRequest>(request, limits).await {
                Ok(update) => answer(manager.update(id, update).await, StatusCode::OK),
                Err(refusal) => refusal,
            }
        }
        (Method::DELETE, path) if path.starts_with("/v1/containers/") => {
            let id = path.trim_start_matches("/v1/containers/").to_owned();
            let destroyed = manager.destroy(id.clone()).await.map(|()| {
                // Its probes must not keep its namespace alive.
                stats.collector.forget(&id);
                serde_json::json!({ "destroyed": id })
            });
            answer(destroyed, StatusCode::OK)
        }
        (_, path) => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The manager's answer: `ok` with the result, or the status of the failure's kind
/// (`crate::failure`) with its message.
fn answer<T: serde::Serialize>(
    result: Result<T, RequestError>,
    ok: StatusCode,
) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => json(ok, &value),
        Err(refusal) => refused(&refusal),
    }
}

async fn statistics(stats: &StatisticsSource, id: Option<&str>) -> Response<Full<Bytes>> {
    match stats.entries(id).await {
        Ok(Some(entries)) => json(StatusCode::OK, &entries),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no container {}; see `netiso container list`",
                id.unwrap_or_default()
            ),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Largest request body the control API reads.
const MAX_BODY: usize = 64 * 1024;

/// Reads and parses a JSON request body of at most [`MAX_BODY`] bytes, arriving within
/// the server's timeout, or answers why not.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
    limits: Limits,
) -> Result<T, Response<Full<Bytes>>> {
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(limits.timeout, body).await {
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ));
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            ));
        }
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("reading the request: {e}"),
            ));
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}
