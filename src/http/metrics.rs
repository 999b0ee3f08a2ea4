//! `GET /metrics`: the Prometheus exposition, rendered on the blocking pool within a
//! budget of its own (`--max-scrapes`) and streamed in pieces.

use super::query;
use super::AppState;
use crate::sink::prometheus::{self, text::Format};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering::Relaxed;

/// Serves the exposition in the format the `Accept` header asks for; 503 when
/// `--max-scrapes` renders are already running.
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    // Held by the render until its last piece is handed over (or the client is cut off
    // by the write timeout), so stalled scrapers can hold at most --max-scrapes.
    let Ok(permit) = app.scrapes.clone().try_acquire_owned() else {
        app.http.scrapes_rejected.fetch_add(1, Relaxed);
        return (
            [(header::RETRY_AFTER, "1")],
            query::busy("too many concurrent scrapes; retry later"),
        )
            .into_response();
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let registry = app.registry.clone();
    let start = app.start_unix_secs;
    let engine = app.engine_metrics.clone();
    let recorder = app.recorder.clone();
    let workers = app.workers.clone();
    let endpoints = app.endpoints.clone();
    let stream_clients = app.stream.clients();
    let (http, nats) = (app.http.clone(), app.nats.clone());
    let snapshots = app.load_snapshots.clone();
    // Streamed in ~1 MiB pieces: with 1,024 ranks the exposition is ~23 MB, which built
    // whole would stay resident (the allocator keeps such buffers) after every scrape.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(2);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let pieces = tx.clone();
        let sink = Box::new(move |piece: String| {
            let _ = pieces.blocking_send(Ok(piece));
        });
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(s) = &snapshots {
                s.refresh();
            }
            prometheus::render_streaming_with(
                &registry,
                format,
                start,
                METRICS_CHUNK_BYTES,
                sink,
                prometheus::Extras {
                    endpoints: &endpoints,
                    engine: engine.as_deref(),
                    recorder: recorder.as_deref(),
                    workers: workers.as_deref(),
                    http: Some(&http),
                    nats: nats.as_deref(),
                    stream_clients,
                    load_snapshots: snapshots.as_deref(),
                },
            )
        }));
        // A failed render aborts the response instead of ending a truncated exposition.
        let _ = tx.blocking_send(
            rendered.map_err(|_| std::io::Error::other("rendering /metrics failed")),
        );
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// Size of the pieces `/metrics` is streamed in.
const METRICS_CHUNK_BYTES: usize = 1 << 20;
