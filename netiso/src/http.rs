//! The read-only HTTP server: health now; statistics endpoints grow here.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::datapath::AttachMode;

/// What `/health` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub public_interface: String,
    pub attach_mode: AttachMode,
    pub bpffs_root: String,
}

/// Binds the listening socket; separate from [`serve`] so bind errors surface at start-up.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!("listening on {listen}; is another agent running? choose another --listen")
    })
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, health: Health) {
    let health = Arc::new(health);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                log::warn!("accepting an HTTP connection: {error}");
                continue;
            }
        };
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let health = Arc::clone(&health);
                async move { Ok::<_, Infallible>(route(&request, &health)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("HTTP connection from {peer}: {error}");
            }
        });
    }
}

fn route(request: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "this endpoint is read-only; use GET"}),
        );
    }
    match request.uri().path() {
        "/health" => json_response(StatusCode::OK, health),
        path => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no such endpoint: {path}; try /health")}),
        ),
    }
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec(body).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}
