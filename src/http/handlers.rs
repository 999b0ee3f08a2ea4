//! Request handlers. Query strings are parsed strictly (unknown keys are errors) so a
//! typo in a planner's URL fails loudly instead of silently matching everything.

use super::AppState;
use crate::sink::json;
use crate::sink::prometheus::{self, text::Format};
use crate::sink::stream::{ClientStream, StreamOptions};
use crate::state::RankFilter;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Longest accepted query-parameter value, in bytes.
const MAX_PARAM_BYTES: usize = 256;

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

use axum::Json;

/// Filters common to the JSON endpoints.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
}

impl FilterParams {
    fn into_filter(self) -> Result<RankFilter, String> {
        for v in [&self.engine, &self.worker_id].into_iter().flatten() {
            if v.len() > MAX_PARAM_BYTES {
                return Err(format!(
                    "query values are limited to {MAX_PARAM_BYTES} bytes"
                ));
            }
        }
        Ok(RankFilter {
            engine: self.engine,
            worker_id: self.worker_id,
            dp_rank: self.dp_rank,
        })
    }
}

pub async fn index() -> &'static str {
    concat!(
        "fpm-exporter ", env!("CARGO_PKG_VERSION"), "\n\n",
        "GET /metrics      Prometheus metrics (text 0.0.4; OpenMetrics on request)\n",
        "GET /engine_metrics  the engines' own metrics: multiprocess directories and scraped workers\n",
        "GET /v1/ranks     JSON snapshot of every rank (?engine=&worker_id=&dp_rank=)\n",
        "GET /v1/stream    server-sent events: frames and state changes (?interval=1s for snapshots)\n",
        "GET /v1/loads     router load view per rank (?engine=&worker_id=&dp_rank=&format=sglang)\n",
        "GET /get_load     SGLang /get_load entries of one worker (?worker_id=&engine=)\n",
        "GET /v1/model     fitted wall_time models and a prediction (?prefill_tokens=&decode_requests=&decode_kv_tokens=)\n",
        "GET /healthz      liveness of the exporter\n",
        "GET /readyz       readiness: HTTP up and every endpoint started\n",
    )
}

pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    // Held by the render until its last piece is handed over (or the client is cut off
    // by the write timeout), so stalled scrapers can hold at most --max-scrapes.
    let Ok(permit) = app.scrapes.clone().try_acquire_owned() else {
        app.http.scrapes_rejected.fetch_add(1, Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(serde_json::json!({ "error": "too many concurrent scrapes; retry later" })),
        )
            .into_response();
    };
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let registry = app.registry.clone();
    let start = app.start_unix_secs;
    let engine = app.engine_metrics.clone();
    let recorder = app.recorder.clone();
    let workers = app.workers.clone();
    let (http, nats) = (app.http.clone(), app.nats.clone());
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
            prometheus::render_streaming_with(
                &registry,
                format,
                start,
                METRICS_CHUNK_BYTES,
                sink,
                prometheus::Extras {
                    engine: engine.as_deref(),
                    recorder: recorder.as_deref(),
                    workers: workers.as_deref(),
                    http: Some(&http),
                    nats: nats.as_deref(),
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

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    let endpoints = app.registry.endpoints();
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

pub async fn ranks(
    State(app): State<AppState>,
    params: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match params
        .map_err(|e| e.body_text())
        .and_then(|Query(p)| p.into_filter())
    {
        Ok(f) => f,
        Err(msg) => return bad_request(msg),
    };
    let registry = app.registry.clone();
    let doc = tokio::task::spawn_blocking(move || {
        let snap = registry.snapshot(&filter);
        json::RanksDocument::new(registry, snap)
    })
    .await;
    let doc = match doc {
        Ok(d) => d,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // Streamed in pieces, each rendered on the blocking pool when the client has taken
    // the one before: no piece waits in memory for a slow client, and a stalled client
    // holds the snapshot but no thread.
    let pieces = futures::stream::unfold(Some(doc), |doc| async move {
        let mut doc = doc?;
        let next = tokio::task::spawn_blocking(move || {
            let piece = doc.next_piece(RANKS_CHUNK_BYTES);
            (doc, piece)
        })
        .await;
        match next {
            Ok((doc, Some(piece))) => Some((Ok(bytes::Bytes::from(piece)), Some(doc))),
            Ok((_, None)) => None,
            // A failed render aborts the response instead of ending truncated JSON.
            Err(_) => Some((
                Err(std::io::Error::other("rendering /v1/ranks failed")),
                None,
            )),
        }
    });
    let body = axum::body::Body::from_stream(pieces);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Size of the pieces `/v1/ranks` is streamed in (about 60 ranks each).
pub const RANKS_CHUNK_BYTES: usize = 256 << 10;

/// Query of `/v1/stream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
    /// Sampling interval, e.g. `1s`, `500ms` (100 ms to 1 h).
    interval: Option<String>,
    /// Whether heartbeat frames are sent (default true).
    heartbeats: Option<bool>,
    /// Whether each new read of an engine-metrics worker is sent as `event: engine`
    /// (a `/v1/engines` worker entry; default false).
    engines: Option<bool>,
}

/// How often `engines=true` streams look for new worker reads.
const ENGINE_POLL: Duration = Duration::from_millis(250);

pub async fn stream(
    State(app): State<AppState>,
    params: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_request(e.body_text()),
    };
    let interval = match p.interval.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Some(d),
        Some(_) => return bad_request("interval must be a duration from 100ms to 1h, e.g. 1s"),
    };
    let filter = match (FilterParams {
        engine: p.engine,
        worker_id: p.worker_id,
        dp_rank: p.dp_rank,
    })
    .into_filter()
    {
        Ok(f) => f,
        Err(msg) => return bad_request(msg),
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "too many stream clients; retry later" })),
        )
            .into_response();
    };
    let watch = match p.engines {
        Some(true) => {
            match super::engines::EngineWatch::new(app.clone(), filter.engine.clone(), ENGINE_POLL)
            {
                Some(w) => Some(w),
                None => {
                    return bad_request(
                        "engines=true needs an engine with --scrape or --multiproc-dir",
                    )
                }
            }
        }
        _ => None,
    };
    let options = StreamOptions {
        filter,
        interval,
        heartbeats: p.heartbeats.unwrap_or(true),
    };
    let client = ClientStream::new(app.registry.clone(), options, app.snapshots.clone());
    let shutdown = app.shutdown.clone();
    let events = futures::stream::unfold(
        (client, permit, shutdown, watch),
        |(mut client, permit, mut shutdown, mut watch)| async move {
            let engine_event = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            let (event, data) = tokio::select! {
                m = client.next() => { let m = m?; (m.event, m.data) }
                e = engine_event => ("engine", bytes::Bytes::from(e)),
                _ = shutdown.wait_for(|s| *s) => return None,
            };
            // SAFETY of text: JSON never contains raw newlines, so one data line per event.
            let text = String::from_utf8_lossy(&data).into_owned();
            Some((
                Ok::<_, std::convert::Infallible>(Event::default().event(event).data(text)),
                (client, permit, shutdown, watch),
            ))
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
