//! The HTTP accept loop. `axum::serve` sets no timer, so a client that opens a
//! connection and never sends a request would hold it forever; this loop serves
//! each connection with hyper directly, with a header-read timeout that also bounds
//! idle keep-alive connections, a write timeout for clients that stop reading, and
//! drains in-flight responses at shutdown.

use super::AppState;
use crate::sink::serving::HttpStats;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Sleep;

/// Timers of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeTimeouts {
    /// Longest wait for a request's headers, and for the next request on a kept-alive
    /// connection.
    pub idle: Duration,
    /// Longest a response write may make no progress before the connection is dropped.
    pub write: Duration,
}

/// Which listeners are accepting connections; `/readyz` says `http: true` only while
/// every expected one is.
#[derive(Debug, Default)]
pub struct Listening {
    expected: AtomicUsize,
    serving: AtomicUsize,
}

impl Listening {
    /// Declares that `n` listeners will serve.
    pub fn expect(&self, n: usize) {
        self.expected.store(n, SeqCst);
    }

    /// Whether every expected listener is in its accept loop.
    pub fn all_serving(&self) -> bool {
        let expected = self.expected.load(SeqCst);
        expected > 0 && self.serving.load(SeqCst) >= expected
    }
}

/// Counts one listener as serving for as long as it lives (also through a panic).
struct Serving(Arc<Listening>);

impl Serving {
    fn new(l: Arc<Listening>) -> Self {
        l.serving.fetch_add(1, SeqCst);
        Serving(l)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, SeqCst);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then waits for in-flight
/// responses (open streams end by themselves on the same signal).
pub async fn serve(listener: TcpListener, app: Router, state: &AppState) {
    let timeouts = state.timeouts;
    let mut shutdown = state.shutdown.clone();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle)
        .keep_alive(true);
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    let serving = Serving::new(state.listening.clone());
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning on accept.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(WriteTimeout::new(
            stream,
            timeouts.write,
            state.http.clone(),
        ));
        let conn = builder.serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Not ready from here on: new connections are refused while in-flight ones drain.
    drop(serving);
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose writes fail with `TimedOut` once one has been pending for
/// `limit`: a client that stops reading gives back its connection, its task and
/// whatever the response holds (a `/metrics` render waiting to hand over a piece).
/// Time spent waiting for the client's next request is not counted.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    http: Arc<HttpStats>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration, http: Arc<HttpStats>) -> Self {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
            http,
        }
    }

    /// Passes a write's outcome on, arming the timer while it is pending.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        self.http.write_timeouts.fetch_add(1, Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client read nothing for the HTTP write timeout",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}
