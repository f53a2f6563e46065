//! The accept loop both servers share, with the bounds a long-running agent needs:
//! at most so many connections at once, a deadline for each request's headers (idle
//! connections included), and, when accepting fails (out of descriptors, say), a
//! pause that grows instead of a busy loop, and warnings at most once a second.
use std::{
    convert::Infallible,
    future::Future,
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
};

/// How much a server takes on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// For a request's headers and body to arrive, and for an idle connection.
    pub timeout: Duration,
}

/// A listening socket of either server.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Most time between two accept attempts after errors.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// Least time between two warnings of one server.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);

/// Serves HTTP/1 on `listener` with `handler` until the task is dropped.
pub async fn serve<L, H, F, B>(listener: L, limits: Limits, server: &'static str, handler: H)
where
    L: Listener,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut pause = Duration::ZERO;
    let mut warnings = RateLimitedWarning::new(server);
    loop {
        // Waiting for a free slot leaves further clients in the kernel's backlog.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok(stream) => {
                pause = Duration::ZERO;
                stream
            }
            Err(error) => {
                warnings.warn(&format!("accepting a connection: {error}"));
                pause = (pause * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_PAUSE);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                log::debug!("{server} connection: {error}");
            }
        });
    }
}

/// Logs a server's warnings at most once per [`WARNING_INTERVAL`], saying how many it
/// held back.
struct RateLimitedWarning {
    server: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    fn new(server: &'static str) -> Self {
        Self {
            server,
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, message: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < WARNING_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!(
                "{} server: {message} ({} more like it not logged)",
                self.server,
                self.suppressed
            );
        } else {
            log::warn!("{} server: {message}", self.server);
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}
