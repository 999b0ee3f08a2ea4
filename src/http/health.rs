//! The open endpoints: the index (`/api`), liveness (`/healthz`) and readiness (`/readyz`).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering::Relaxed;

/// `GET /api`: what is served where.
pub async fn index() -> &'static str {
    concat!(
        "fpm-exporter ", env!("CARGO_PKG_VERSION"), "\n\n",
        "GET /metrics      Prometheus metrics (text 0.0.4; OpenMetrics on request)\n",
        "GET /engine_metrics  the engines' own metrics: multiprocess directories and scraped workers\n",
        "GET /v1/ranks     JSON snapshot of every rank (?engine=&worker_id=&dp_rank=)\n",
        "GET /v1/stream    server-sent events: frames and state changes (?interval=1s for snapshots)\n",
        "GET /v1/rank_loads  router load view per rank from FPM (?engine=&worker_id=&dp_rank=&format=sglang)\n",
        "GET /v1/loads     SGLang's /v1/loads from the engine's load snapshots (?engine=&dp_rank=&include=&format=prometheus)\n",
        "GET /engines/NAME/v1/loads, /engines/NAME/health  one engine's, as a gateway's worker URL\n",
        "GET /get_load     SGLang /get_load entries of one worker (?worker_id=&engine=)\n",
        "GET /v1/model     fitted wall_time models and a prediction (?prefill_tokens=&decode_requests=&decode_kv_tokens=)\n",
        "GET /             the live page: every rank, updated each second from /v1/stream\n",
        "GET /api          this index\n",
        "GET /healthz      liveness of the exporter\n",
        "GET /readyz       readiness: HTTP up and every endpoint started\n",
        "GET /health       SGLang's /health: 200 while the engine's load snapshots are live\n",
    )
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once every listener is in its accept loop and every endpoint has
/// started; else 503 saying what is missing.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let endpoints = &app.endpoints;
    let waiting: Vec<&str> = endpoints
        .iter()
        .filter(|e| !e.started.load(Relaxed))
        .map(|e| &*e.address)
        .collect();
    let http_up = app.listening.all_serving();
    let ready = http_up && waiting.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "http": http_up,
        "endpoints": endpoints.len(),
        "endpoints_not_started": waiting,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
