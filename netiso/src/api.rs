//! The control API: HTTP/JSON over a Unix socket (mode 0600), and its client, which
//! the CLI uses.
//!
//! | method | path | body | answer |
//! | --- | --- | --- | --- |
//! | GET | /v1/containers | | `[ContainerInfo]` |
//! | POST | /v1/containers | `CreateRequest` | 201, `ContainerInfo` |
//! | PUT | /v1/containers/ID | `{"ports"?: [{"begin","end"}], "cpus"?: N}` | 200, `ContainerInfo` |
//! | DELETE | /v1/containers/ID | | 200, `{"destroyed": ID}` (also when unknown) |
//! | GET | /v1/statistics | | the `/monitor/statistics` array |
//! | GET | /v1/statistics/ID | | the same, for one container (404 if unknown) |
//!
//! Errors answer `{"error": "…"}` with a 4xx or 5xx status.
use std::{
    convert::Infallible,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::oneshot,
};

use crate::{
    manager::{ContainerInfo, CreateRequest, Manager},
    stats::StatisticsSource,
};

/// What `container update` sends: the container's new non-ephemeral ports and/or its
/// new number of CPUs (absent: unchanged).
#[derive(Debug, Default, serde::Deserialize, Serialize)]
pub struct UpdateRequest {
    #[serde(default)]
    pub ports: Option<Vec<crate::ports::PortRange>>,
    #[serde(default)]
    pub cpus: Option<f64>,
}

/// A request for the manager thread, with where to send the answer.
enum Command {
    List(oneshot::Sender<Vec<ContainerInfo>>),
    Create(
        CreateRequest,
        oneshot::Sender<Result<ContainerInfo, String>>,
    ),
    Destroy(String, oneshot::Sender<Result<(), String>>),
    Update(
        String,
        UpdateRequest,
        oneshot::Sender<Result<ContainerInfo, String>>,
    ),
}

/// The manager thread's mailbox.
#[derive(Clone)]
pub struct ManagerHandle(mpsc::Sender<Command>);

impl ManagerHandle {
    /// The containers, as the manager knows them now.
    pub async fn list(&self) -> anyhow::Result<Vec<ContainerInfo>> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Command::List(reply))
            .map_err(|_| anyhow::anyhow!("the agent is shutting down"))?;
        answer.await.context("the agent is shutting down")
    }
}

/// Runs `manager` on a thread of its own (in the caller's network namespace: netlink
/// work there must not run on the async runtime's threads).
pub fn spawn_manager(mut manager: Manager) -> ManagerHandle {
    let (sender, receiver) = mpsc::channel();
    thread::Builder::new()
        .name("netiso-manager".into())
        .spawn(move || {
            for command in receiver {
                match command {
                    Command::List(reply) => {
                        let _ = reply.send(manager.list());
                    }
                    Command::Create(request, reply) => {
                        let _ = reply.send(manager.create(request).map_err(|e| format!("{e:#}")));
                    }
                    Command::Update(id, update, reply) => {
                        let result = manager.update(&id, update.ports, update.cpus);
                        let _ = reply.send(result.map_err(|e| format!("{e:#}")));
                    }
                    Command::Destroy(id, reply) => {
                        let _ = reply.send(manager.destroy(&id).map_err(|e| format!("{e:#}")));
                    }
                }
            }
        })
        .expect("starting the manager thread");
    ManagerHandle(sender)
}

/// Binds the control socket: mode 0600, its directory created, a stale socket (no
/// agent behind it) replaced, a live one refused.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves the control API on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, manager: ManagerHandle, stats: StatisticsSource) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (manager, stats) = (manager.clone(), stats.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (manager, stats) = (manager.clone(), stats.clone());
                async move { Ok::<_, Infallible>(route(request, &manager, &stats).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    request: Request<Incoming>,
    manager: &ManagerHandle,
    stats: &StatisticsSource,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/v1/containers") => match manager.list().await {
            Ok(list) => json(StatusCode::OK, &list),
            Err(_) => gone(),
        },
        (Method::GET, "/v1/statistics") => statistics(stats, None).await,
        (Method::GET, path) if path.starts_with("/v1/statistics/") => {
            statistics(stats, Some(path.trim_start_matches("/v1/statistics/"))).await
        }
        (Method::POST, "/v1/containers") => {
            let create: CreateRequest = match read_json(request).await {
                Ok(value) => value,
                Err(answer) => return answer,
            };
            let (reply, answer) = oneshot::channel();
            let _ = manager.0.send(Command::Create(create, reply));
            match answer.await {
                Ok(Ok(info)) => json(StatusCode::CREATED, &info),
                Ok(Err(message)) => error(StatusCode::BAD_REQUEST, message),
                Err(_) => gone(),
            }
        }
        (Method::PUT, path) if path.starts_with("/v1/containers/") => {
            let id = path.trim_start_matches("/v1/containers/").to_owned();
            let update: UpdateRequest = match read_json(request).await {
                Ok(value) => value,
                Err(answer) => return answer,
            };
            let (reply, answer) = oneshot::channel();
            let _ = manager.0.send(Command::Update(id, update, reply));
            match answer.await {
                Ok(Ok(info)) => json(StatusCode::OK, &info),
                Ok(Err(message)) => error(StatusCode::BAD_REQUEST, message),
                Err(_) => gone(),
            }
        }
        (Method::DELETE, path) if path.starts_with("/v1/containers/") => {
            let id = path.trim_start_matches("/v1/containers/").to_owned();
            let (reply, answer) = oneshot::channel();
            let _ = manager.0.send(Command::Destroy(id.clone(), reply));
            match answer.await {
                Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({ "destroyed": id })),
                Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
                Err(_) => gone(),
            }
        }
        (_, path) => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
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

fn gone() -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is shutting down".into(),
    )
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    crate::http::json_response(status, body)
}

/// Reads and parses a JSON request body, or answers why not.
async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading the request: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// Client side: sends one request to the agent at `socket` and returns the JSON it
/// answered; an error answer becomes an error with the agent's message.
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
        let stream = UnixStream::connect(&socket).await.with_context(|| {
            format!(
                "cannot reach the agent at {}: is `netiso agent` running? (set --api-socket or NETISO_API_SOCKET)",
                socket.display()
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
            bail!(
                "{}",
                value["error"].as_str().unwrap_or("the agent refused the request")
            );
        }
        Ok(value)
    })
}
