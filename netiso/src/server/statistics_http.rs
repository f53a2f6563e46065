//! The read-only HTTP server: `/monitor/statistics` (and `.json`) in Mesos's JSON,
//! `/metrics` for Prometheus, `/health`.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
};
use serde::Serialize;
use tokio::net::TcpListener;

use super::{
    StatisticsSource,
    connections::{self, Limits},
    response::json as json_response,
};
use crate::{datapath::AttachMode, stats::prometheus};

/// What `/health` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub public_interface: String,
    pub attach_mode: AttachMode,
    pub bpffs_root: String,
}

/// Binds the listening socket; separate from [`serve`] so bind errors surface at
/// start-up, before the async runtime exists.
pub fn bind(listen: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!("listening on {listen}; is another agent running? choose another --listen")
    })?;
    listener
        .set_nonblocking(true)
        .context("making the HTTP socket non-blocking")?;
    Ok(listener)
}

/// Serves HTTP on `listener` until the task is dropped.
pub async fn serve(
    listener: std::net::TcpListener,
    limits: Limits,
    health: Health,
    stats: StatisticsSource,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener).context("serving HTTP")?;
    let health = Arc::new(health);
    connections::serve(listener, limits, "HTTP", move |request| {
        let (health, stats) = (Arc::clone(&health), stats.clone());
        async move { route(&request, &health, &stats).await }
    })
    .await;
    Ok(())
}

async fn route(
    request: &Request<Incoming>,
    health: &Health,
    stats: &StatisticsSource,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "this endpoint is read-only; use GET"}),
        );
    }
    match request.uri().path() {
        "/health" => json_response(StatusCode::OK, health),
        "/monitor/statistics" | "/monitor/statistics.json" => match stats.entries(None).await {
            Ok(entries) => json_response(StatusCode::OK, &entries.unwrap_or_default()),
            Err(error) => failed(&error),
        },
        "/metrics" => match stats.entries(None).await {
            Ok(entries) => {
                let failures = stats.collector.probe_failures();
                let accept = request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let format = prometheus::Format::negotiate(accept);
                let text = prometheus::render(&entries.unwrap_or_default(), &failures, format);
                Response::builder()
                    .header(header::CONTENT_TYPE, format.content_type())
                    .body(Full::new(Bytes::from(text)))
                    .unwrap_or_default()
            }
            Err(error) => failed(&error),
        },
        path => json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!(
                "no such endpoint: {path}; try /monitor/statistics, /metrics or /health"
            )}),
        ),
    }
}

fn failed(error: &anyhow::Error) -> Response<Full<Bytes>> {
    log::warn!("statistics: {error:#}");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({"error": format!("{error:#}")}),
    )
}
