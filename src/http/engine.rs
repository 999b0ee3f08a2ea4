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

/// Size of the pieces the response is streamed in.
const CHUNK_BYTES: usize = 256 << 10;

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
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(2);
    tokio::task::spawn_blocking(move || {
        let pieces = tx.clone();
        let sink = Box::new(move |piece: String| {
            let _ = pieces.blocking_send(Ok(piece));
        });
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut w = Writer::streaming(format, CHUNK_BYTES, sink);
            engine_metrics::write_engines(&mut w, em.as_deref(), workers.as_deref(), &|_| false);
            w.finish()
        }));
        // A failed render aborts the response instead of ending a truncated exposition.
        let _ = tx.blocking_send(
            rendered.map_err(|_| std::io::Error::other("rendering /engine_metrics failed")),
        );
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}
