//! The rank endpoints: `GET /v1/ranks` (a JSON snapshot, streamed in pieces) and
//! `GET /v1/stream` (server-sent events of frames, state changes, snapshots and
//! engine reads).

use super::query;
use super::AppState;
use crate::sink::ranks_document as json;
use crate::sink::stream::{ClientStream, StreamOptions};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;

/// Query of `/v1/ranks`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
}

/// Serves the snapshot of every rank matching the filter.
pub async fn ranks(
    State(app): State<AppState>,
    params: Result<Query<FilterParams>, QueryRejection>,
) -> Response {
    let filter = match query::parse(params)
        .and_then(|p| query::rank_filter(p.engine, p.worker_id, p.dp_rank))
    {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let registry = app.registry.clone();
    let snaps = app.load_snapshots.clone();
    let doc = tokio::task::spawn_blocking(move || {
        let snap = registry.snapshot(&filter);
        let doc = json::RanksDocument::new(registry, snap);
        match snaps {
            Some(s) => doc.with_join(s.join_now()),
            None => doc,
        }
    })
    .await;
    let doc = match doc {
        Ok(d) => d,
        Err(_) => {
            return query::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering /v1/ranks failed",
            )
        }
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

/// Serves the events of every rank matching the filter until the client leaves or
/// the exporter stops; 503 when `--max-streams` clients are connected.
pub async fn stream(
    State(app): State<AppState>,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Response {
    let p = match query::parse(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let interval = match p.interval.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Some(d),
        Some(_) => {
            return query::bad_request("interval must be a duration from 100ms to 1h, e.g. 1s")
        }
    };
    let filter = match query::rank_filter(p.engine, p.worker_id, p.dp_rank) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return query::busy("too many stream clients; retry later");
    };
    let watch = match p.engines {
        Some(true) => {
            match super::engines::EngineWatch::new(app.clone(), filter.engine.clone(), ENGINE_POLL)
            {
                Some(w) => Some(w),
                None => {
                    return query::bad_request(
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
    let client = ClientStream::new(&app.stream, options, app.snapshots.clone());
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
