//! `GET /engine_metrics`: the engines' own Prometheus metrics, merged from their
//! multiprocess directories at request time on the blocking pool (directory reads
//! must not hold an async worker), in the format the `Accept` header asks for.

use super::AppState;
use crate::sink::prometheus::{engine_metrics, text::Format, text::Writer};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Length of the latest body.
static LAST_LEN: AtomicUsize = AtomicUsize::new(0);

/// Serves the merged engine metrics; 404 when no engine has `--multiproc-dir`.
pub async fn engine_metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(em) = app.engine_metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "no engine has a multiprocess directory (--multiproc-dir / multiproc_dir)\n",
        )
            .into_response();
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = tokio::task::spawn_blocking(move || {
        // Sized like the last body, so a large one is not grown by copying.
        let hint = LAST_LEN.load(Relaxed);
        let mut w = Writer::new(format, (hint + hint / 8).max(64 * 1024));
        engine_metrics::write_engines(&mut w, &em, &|_| false);
        let body = w.finish();
        LAST_LEN.store(body.len(), Relaxed);
        body
    })
    .await;
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, format.content_type())], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
