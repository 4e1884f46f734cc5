//! What a connection may hold before it has proved anything: the webhook's
//! ports take connections from the network, and a peer that opens many,
//! trickles headers or holds a body half-sent must not exhaust memory or
//! connection slots (issue 19 item 10).
//!
//! Four bounds, each with its own knob:
//! - at most `max_connections` open connections per port; more wait for a
//!   slot as long as a request head may take, then are closed;
//! - a connection that sends nothing for `idle_timeout` is closed, and the
//!   HTTP/1 head must arrive within `header_timeout`;
//! - a request body must arrive within `body_timeout` (a real review is one
//!   write of a few KiB);
//! - all bodies being read at once hold at most `body_budget` bytes, each
//!   reserving its `Content-Length` (or the largest body accepted) before a
//!   byte is buffered, waiting at most `body_timeout` for room.
//!
//! Memory under attack is then at most `body_budget` + `max_connections` ×
//! (TLS buffers + the HTTP/1 read buffer, capped at [`READ_BUFFER`]).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The HTTP/1 read buffer's cap: a review's head is a few hundred bytes.
pub const READ_BUFFER: usize = 64 * 1024;

/// The bounds; see the module's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections per port.
    pub max_connections: usize,
    /// Time for the HTTP/1 request head.
    pub header_timeout: Duration,
    /// Time for a whole request body.
    pub body_timeout: Duration,
    /// Time a connection may send nothing.
    pub idle_timeout: Duration,
    /// Bytes of request bodies held at once, per port.
    pub body_budget: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            body_budget: 64 * 1024 * 1024,
        }
    }
}

impl ConnLimits {
    /// Sets hyper's limits on `server`.
    pub fn configure<A>(&self, server: &mut axum_server::Server<A>) {
        let timer = hyper_util::rt::TokioTimer::new();
        let builder = server.http_builder();
        builder
            .http1()
            .timer(timer.clone())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(READ_BUFFER);
        builder
            .http2()
            .timer(timer)
            .max_concurrent_streams(64)
            .max_header_list_size(READ_BUFFER as u32)
            .keep_alive_interval(self.idle_timeout / 3)
            .keep_alive_timeout(self.header_timeout);
    }
}

/// Caps open connections and closes idle ones; wraps the TCP stream under TLS.
#[derive(Debug, Clone)]
pub struct CappedAcceptor {
    slots: Arc<Semaphore>,
    idle: Duration,
    wait: Duration,
}

impl CappedAcceptor {
    /// At most `limits.max_connections` at once.
    pub fn new(limits: &ConnLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            idle: limits.idle_timeout,
            wait: limits.header_timeout,
        }
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for CappedAcceptor {
    type Stream = Counted;
    type Service = S;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Counted, S)>> + Send>>;

    /// Waits for a slot as long as a head may take; a burst of real clients
    /// waits its turn, and a connection still without a slot then is closed.
    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let (slots, idle, wait) = (self.slots.clone(), self.idle, self.wait);
        Box::pin(async move {
            match tokio::time::timeout(wait, slots.acquire_owned()).await {
                Ok(Ok(permit)) => Ok((
                    Counted {
                        inner: stream,
                        _slot: permit,
                        idle,
                        deadline: Box::pin(tokio::time::sleep(idle)),
                    },
                    service,
                )),
                _ => {
                    tracing::warn!("connection closed: no connection slot became free in time");
                    Err(io::Error::other("connection limit reached"))
                }
            }
        })
    }
}

/// A connection holding one of the port's slots until it closes.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The bytes all bodies being read may hold, shared by one port's requests.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    /// One permit per KiB.
    kib: Arc<Semaphore>,
    /// Largest body accepted.
    max_body: usize,
    timeout: Duration,
}

impl BodyBudget {
    /// `limits.body_budget` bytes in all, bodies of at most `max_body` bytes.
    pub fn new(limits: &ConnLimits, max_body: usize) -> Self {
        Self {
            kib: Arc::new(Semaphore::new((limits.body_budget / 1024).max(max_body / 1024 + 1))),
            max_body,
            timeout: limits.body_timeout,
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

/// Middleware: reserves the body's size from the budget, reads the body
/// within the timeout, and hands the handler the bytes already read.
pub async fn read_body(State(budget): State<BodyBudget>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > budget.max_body) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", budget.max_body),
        );
    }
    if declared == Some(0) {
        return next.run(req).await;
    }
    let size = declared.unwrap_or(budget.max_body);
    let kib = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let started = tokio::time::Instant::now();
    let permit = match tokio::time::timeout(budget.timeout, budget.kib.clone().acquire_many_owned(kib)).await {
        Ok(Ok(p)) => p,
        _ => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies are being received at once; retry".to_owned(),
            );
        }
    };
    let (parts, body) = req.into_parts();
    let left = budget.timeout.saturating_sub(started.elapsed());
    let bytes = match tokio::time::timeout(left, to_bytes(body, budget.max_body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return refuse(StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", budget.timeout.as_secs()),
            );
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(permit);
    response
}
