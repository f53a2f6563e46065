//! `GET /v1/monitor[?container=ID][&reason=R]` on the control socket: the datapath's
//! drop events as they happen, one JSON object per line ([`DropRecord`]), for as long
//! as the client reads. `netiso monitor` is its client.
use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body_util::{Either, Full};
use hyper::{
    Response, StatusCode,
    body::{Body, Bytes, Frame},
    header,
};
use netiso_common::DropReason;
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::response::{error, refused};
use crate::{
    control::ManagerHandle,
    datapath::drop_events::{DropEventReader, DropRecord, clock_offset_ns, slot_of},
};

/// The control API's answers: whole JSON documents, or this stream.
pub type ApiBody = Either<Full<Bytes>, LineStream>;

/// A response body fed line by line from a channel; dropping it (the client went
/// away) closes the channel.
pub struct LineStream(mpsc::Receiver<Bytes>);

impl Body for LineStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

/// Least time between two refreshes of the slot → container table.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Starts a stream of drop events for the request's `query`.
pub async fn start(
    query: Option<&str>,
    monitor: &DropEventReader,
    manager: &ManagerHandle,
) -> Response<ApiBody> {
    let left = |response: Response<Full<Bytes>>| response.map(Either::Left);
    let mut container = None;
    let mut reason = None;
    for (key, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match key {
            "container" => container = Some(value.to_owned()),
            "reason" => match DropReason::ALL.iter().find(|r| r.name() == value) {
                Some(r) => reason = Some(r.name()),
                None => {
                    let names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
                    return left(error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "unknown drop reason {value:?}; reasons are {}",
                            names.join(", ")
                        ),
                    ));
                }
            },
            _ => {}
        }
    }
    if let Some(id) = &container
        && let Err(refusal) = manager.get(id.clone()).await
    {
        return left(refused(&refusal));
    }
    let mut subscription = match monitor.subscribe() {
        Ok(subscription) => subscription,
        Err(e) => return left(error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))),
    };
    let (lines, receiver) = mpsc::channel::<Bytes>(256);
    let manager = manager.clone();
    tokio::spawn(async move {
        let offset = clock_offset_ns();
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut refreshed: Option<Instant> = None;
        let mut lost = 0;
        loop {
            let event = tokio::select! {
                event = subscription.events.recv() => event,
                () = lines.closed() => return,
            };
            let mut event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    lost += missed;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            event.suppressed += std::mem::take(&mut lost);
            let slot = slot_of(&event);
            if let Some(slot) = slot
                && !names.contains_key(&slot)
                && refreshed.is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL)
            {
                refreshed = Some(Instant::now());
                if let Ok(containers) = manager.list().await {
                    names = containers
                        .into_iter()
                        .filter_map(|c| Some((c.slot()?, c.id)))
                        .collect();
                }
            }
            let name = slot.and_then(|s| names.get(&s).cloned());
            if container.is_some() && name != container {
                continue;
            }
            let record = DropRecord::new(&event, name, offset);
            if reason.is_some_and(|r| r != record.reason) {
                continue;
            }
            let mut line = serde_json::to_vec(&record).unwrap_or_default();
            line.push(b'\n');
            if lines.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Either::Right(LineStream(receiver)))
        .unwrap_or_else(|_| {
            left(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the stream",
            ))
        })
}
