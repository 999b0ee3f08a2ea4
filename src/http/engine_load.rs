//! The engine's own load, as SGLang serves it: `GET /v1/loads` (SGLang's document,
//! built from the engine's load snapshots) and `GET /health`, both also under
//! `/engines/{engine}/` so a gateway can take that as one engine's worker URL.
//!
//! Like SGLang's FastAPI handler, unknown query keys are ignored (a client written for
//! SGLang may send its own); `include` and `dp_rank` follow SGLang's rules. Which
//! engine: `?engine=`, the path, or the only engine with a `load_snapshot`; with none,
//! the answer is SGLang's for an engine with no snapshot yet, `"loads": []`.

use super::query::{self, bad_request, error, json};
use super::AppState;
use crate::sink::load_snapshot::{self as doc, DocumentMeta};
use crate::state::load_snapshots::{unix_now, SnapshotState};
use crate::wire::load_snapshot::Include;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Query of `/v1/loads`: SGLang's keys plus `engine`; others are ignored.
#[derive(Debug, Deserialize, Default)]
pub struct SglangLoadsParams {
    dp_rank: Option<String>,
    include: Option<String>,
    format: Option<String>,
    engine: Option<String>,
}

enum Target {
    Engine(usize),
    /// An engine (or the exporter) without a snapshot source.
    NoSource,
}

fn resolve(app: &AppState, name: Option<&str>) -> Result<Target, (StatusCode, String)> {
    let Some(snaps) = &app.load_snapshots else {
        return match name {
            Some(n) if !app.registry.engines.iter().any(|e| e.name == n) => Err(unknown(n)),
            _ => Ok(Target::NoSource),
        };
    };
    let store = &snaps.store;
    if let Some(n) = name {
        let Some(i) = app.registry.engines.iter().position(|e| e.name == n) else {
            return Err(unknown(n));
        };
        return Ok(match store.has_source(i) {
            true => Target::Engine(i),
            false => Target::NoSource,
        });
    }
    let with: Vec<usize> = store.engines_with_source().collect();
    match with.as_slice() {
        [] => Ok(Target::NoSource),
        [i] => Ok(Target::Engine(*i)),
        several => Err((StatusCode::BAD_REQUEST, format!(
            "several engines have load snapshots ({}): give engine= or use /engines/<name>/v1/loads",
            several
                .iter()
                .map(|i| app.registry.engines[*i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn unknown(name: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("no engine named {name:?}"))
}

/// `GET /v1/loads`.
pub async fn loads(State(app): State<AppState>, Query(p): Query<SglangLoadsParams>) -> Response {
    let engine = p.engine.clone();
    serve_loads(app, engine, p).await
}

/// `GET /engines/{engine}/v1/loads`.
pub async fn engine_loads(
    State(app): State<AppState>,
    Path(engine): Path<String>,
    Query(p): Query<SglangLoadsParams>,
) -> Response {
    serve_loads(app, Some(engine), p).await
}

async fn serve_loads(app: AppState, engine: Option<String>, p: SglangLoadsParams) -> Response {
    if let Err(e) = query::check_lengths([&engine, &p.include, &p.dp_rank, &p.format]) {
        return e.into_response();
    }
    let dp_rank = match p.dp_rank.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => return bad_request("dp_rank must be an integer"),
    };
    let include = match Include::parse(p.include.as_deref()) {
        Ok(i) => i,
        Err(msg) => return bad_request(msg),
    };
    let target = match resolve(&app, engine.as_deref()) {
        Ok(t) => t,
        Err((status, msg)) => return error(status, msg),
    };
    let prometheus = p.format.as_deref() == Some("prometheus");
    let meta = match &target {
        Target::Engine(i) => app.load_meta.get(i).cloned().unwrap_or_default(),
        Target::NoSource => DocumentMeta::default(),
    };
    let snaps = app.load_snapshots.clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut ranks = Vec::new();
        if let (Target::Engine(i), Some(s)) = (target, snaps) {
            s.refresh_engine(i);
            ranks = s.store.ranks(i, unix_now());
        }
        // Live ranks only: a stale snapshot is a dead engine's last word, not load.
        ranks.retain(|r| r.state == SnapshotState::Live);
        if let Some(d) = dp_rank {
            ranks.retain(|r| i64::try_from(r.dp_rank) == Ok(d));
        }
        match prometheus {
            true => doc::prometheus(&ranks, include).into_bytes(),
            false => doc::document(&ranks, include, &meta),
        }
    })
    .await;
    match (body, prometheus) {
        (Ok(b), true) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            b,
        )
            .into_response(),
        (Ok(b), false) => json(b),
        (Err(_), _) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering /v1/loads failed",
        ),
    }
}

/// `GET /health`: as SGLang's, 200 with an empty body while the engine is up. For an
/// engine with a `load_snapshot`, up means a live snapshot (503 before its first and
/// after its last); without one, the exporter answers for itself.
pub async fn health(State(app): State<AppState>, Query(p): Query<SglangLoadsParams>) -> Response {
    serve_health(app, p.engine).await
}

/// `GET /engines/{engine}/health`.
pub async fn engine_health(State(app): State<AppState>, Path(engine): Path<String>) -> Response {
    serve_health(app, Some(engine)).await
}

async fn serve_health(app: AppState, engine: Option<String>) -> Response {
    let target = match resolve(&app, engine.as_deref()) {
        Ok(t) => t,
        Err((status, msg)) => return error(status, msg),
    };
    let (Target::Engine(i), Some(s)) = (target, app.load_snapshots.clone()) else {
        return StatusCode::OK.into_response();
    };
    let up = tokio::task::spawn_blocking(move || {
        s.refresh_engine(i);
        s.store
            .ranks(i, unix_now())
            .iter()
            .any(|r| r.state == SnapshotState::Live)
    })
    .await
    .unwrap_or(false);
    match up {
        true => StatusCode::OK.into_response(),
        false => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
