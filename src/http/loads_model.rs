//! Handlers of the router and planner feeds: `/v1/rank_loads`, `/get_load` and `/v1/model`.
//! Queries are strict like the other JSON endpoints: an unknown key is a 400.

use super::query::{self, bad_request, error, json};
use super::AppState;
use crate::sink::loads_model::{self, GetLoadError};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Query of `/v1/rank_loads` and `/get_load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
    /// `sglang` for SGLang's `/get_load` shape; the default is the full view.
    format: Option<String>,
}

/// `GET /v1/rank_loads`: the load of every matching rank, read at request time.
pub async fn loads(
    State(app): State<AppState>,
    params: Result<Query<LoadParams>, QueryRejection>,
) -> Response {
    let p = match query::parse(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let sglang = match p.format.as_deref() {
        None | Some("full") => false,
        Some("sglang") => true,
        Some(other) => return bad_request(format!("format {other:?}: use full or sglang")),
    };
    let filter = match query::rank_filter(p.engine, p.worker_id, p.dp_rank) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let snap = app.registry.loads(&filter);
    // The snapshot files are read on the blocking pool (under their shared locks).
    let join = match app.load_snapshots.clone() {
        Some(s) => match tokio::task::spawn_blocking(move || s.join_now()).await {
            Ok(j) => Some(j),
            Err(_) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "reading load snapshots failed",
                )
            }
        },
        None => None,
    };
    if !sglang {
        return json(crate::sink::shared_json::loads_document(
            &app.registry,
            &snap,
            join.as_ref(),
        ));
    }
    match loads_model::get_load_document(&app.registry, &snap, join.as_ref()) {
        Ok(body) => json(body),
        Err(GetLoadError::NoRank) => error(StatusCode::NOT_FOUND, "no rank matches the query"),
        Err(GetLoadError::SeveralWorkers(w)) => bad_request(format!(
            "ranks of several workers match ({}); give worker_id (and engine)",
            w.join(", ")
        )),
    }
}

/// Query of `/get_load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetLoadParams {
    engine: Option<String>,
    worker_id: Option<String>,
}

/// `GET /get_load`: SGLang's endpoint of that name, for routers that call it on the
/// worker's URL; the same as `/v1/rank_loads?format=sglang`.
pub async fn get_load(
    State(app): State<AppState>,
    params: Result<Query<GetLoadParams>, QueryRejection>,
) -> Response {
    let p = match query::parse(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let params = LoadParams {
        engine: p.engine,
        worker_id: p.worker_id,
        dp_rank: None,
        format: Some("sglang".into()),
    };
    loads(State(app), Ok(Query(params))).await
}

/// Query of `/v1/model`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
    prefill_tokens: Option<f64>,
    decode_requests: Option<f64>,
    decode_kv_tokens: Option<f64>,
}

/// `GET /v1/model`: the fitted regressions of every matching rank and engine, each with
/// the wall_time it predicts for the given load (missing terms count as 0).
pub async fn model(
    State(app): State<AppState>,
    params: Result<Query<ModelParams>, QueryRejection>,
) -> Response {
    let p = match query::parse(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let x = [
        1.0,
        p.prefill_tokens.unwrap_or(0.0),
        p.decode_requests.unwrap_or(0.0),
        p.decode_kv_tokens.unwrap_or(0.0),
    ];
    if x.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1e15) {
        return bad_request(
            "prefill_tokens, decode_requests and decode_kv_tokens must be numbers from 0 to 1e15",
        );
    }
    let filter = match query::rank_filter(p.engine, p.worker_id, p.dp_rank) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let registry = app.registry.clone();
    match tokio::task::spawn_blocking(move || {
        let snap = registry.models(&filter);
        loads_model::model_document(&registry, &snap, x)
    })
    .await
    {
        Ok(body) => json(body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering /v1/model failed",
        ),
    }
}
