//! `GET /engine_metrics`: the engines' own Prometheus metrics, merged from their
//! multiprocess directories (read now) and their remote workers (from the scrape
//! cache, never waiting for a worker), in the format the `Accept` header asks for.
//! Rendered on the blocking pool (directory reads must not hold an async worker) and
//! streamed in pieces, so the whole document is never held in memory.

use super::AppState;
use crate::sink::prometheus::{engine_metrics, text::Format, text::Writer};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;

/// Size of the pieces the response is streamed in.
const CHUNK_BYTES: usize = 256 << 10;
/// Pieces kept for the next responses: what is in flight at once (the channel's two,
/// the one being written, those queued in the connection) and a few more.
const POOLED: usize = 4;

/// Buffers of sent pieces, reused: a 12 MB response in fresh buffers cost the
/// renderer a page fault per 4 KiB written (about a tenth of its time).
static POOL: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A piece of the response that goes back to [`POOL`] once the connection wrote it.
struct Piece(String);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let mut pool = POOL.lock();
        if pool.len() < POOLED && self.0.capacity() >= CHUNK_BYTES {
            let mut s = std::mem::take(&mut self.0);
            s.clear();
            pool.push(s);
        }
    }
}

/// An empty buffer for the next piece.
fn fresh_buffer() -> String {
    POOL.lock()
        .pop()
        .unwrap_or_else(|| String::with_capacity(CHUNK_BYTES + 4096))
}

/// Serves the fan-in; 404 when no engine has `--multiproc-dir` or `--scrape`.
pub async fn engine_metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if app.engine_metrics.is_none() && app.workers.is_none() {
        return (
            StatusCode::NOT_FOUND,
            "no engine has a multiprocess directory or scrape target (--multiproc-dir, --scrape)\n",
        )
            .into_response();
    }
    let em = app.engine_metrics.clone();
    let workers = app.workers.clone();
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        let pieces = tx.clone();
        let sink = Box::new(move |piece: String| {
            let _ = pieces.blocking_send(Ok(Bytes::from_owner(Piece(piece))));
        });
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut w =
                Writer::streaming(format, CHUNK_BYTES, sink).with_buffers(Box::new(fresh_buffer));
            engine_metrics::write_engines(&mut w, em.as_deref(), workers.as_deref(), &|_| false);
            Bytes::from_owner(Piece(w.finish()))
        }));
        // A failed render aborts the response instead of ending a truncated exposition.
        let _ = tx.blocking_send(
            rendered.map_err(|_| std::io::Error::other("rendering /engine_metrics failed")),
        );
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
