//! What every JSON handler shares: strict query parsing (an unknown key is an error,
//! so a typo in a planner's URL fails loudly instead of silently matching
//! everything), bounded values, and one error shape, `{"error": "..."}` with the
//! status, that clients can rely on across endpoints.

use crate::state::RankFilter;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Longest accepted query-parameter value, in bytes.
pub const MAX_PARAM_BYTES: usize = 256;

/// A JSON `{"error": ...}` response with `status`.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// A 400 with the JSON error body.
pub fn bad_request(msg: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, msg)
}

/// A query the client got wrong; its response is a 400 with the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery(pub String);

impl IntoResponse for BadQuery {
    fn into_response(self) -> Response {
        bad_request(self.0)
    }
}

/// A 503 for a full budget (stream clients, scrapes): the client should retry.
pub fn busy(msg: impl Into<String>) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, msg)
}

/// A JSON document.
pub fn json(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.into()).into_response()
}

/// The parsed query, or a 400 saying what is wrong (an unknown key, a bad value).
pub fn parse<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, BadQuery> {
    params
        .map(|Query(p)| p)
        .map_err(|e| BadQuery(e.body_text()))
}

/// Refuses any string value longer than [`MAX_PARAM_BYTES`].
pub fn check_lengths<'a>(
    values: impl IntoIterator<Item = &'a Option<String>>,
) -> Result<(), BadQuery> {
    if values
        .into_iter()
        .flatten()
        .any(|v| v.len() > MAX_PARAM_BYTES)
    {
        return Err(BadQuery(format!(
            "query values are limited to {MAX_PARAM_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The rank filter of `?engine=&worker_id=&dp_rank=`, its values bounded.
pub fn rank_filter(
    engine: Option<String>,
    worker_id: Option<String>,
    dp_rank: Option<u64>,
) -> Result<RankFilter, BadQuery> {
    check_lengths([&engine, &worker_id])?;
    Ok(RankFilter {
        engine,
        worker_id,
        dp_rank,
        ..RankFilter::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, serde_json::Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn values_over_the_bound_are_a_json_400_and_at_the_bound_accepted() {
        let at = "e".repeat(MAX_PARAM_BYTES);
        let f = rank_filter(Some(at.clone()), Some("w".into()), Some(3)).unwrap();
        assert_eq!((f.engine.as_deref(), f.dp_rank), (Some(&*at), Some(3)));
        let over = "w".repeat(MAX_PARAM_BYTES + 1);
        let r = rank_filter(None, Some(over), None).unwrap_err();
        let (status, v) = body(r.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "query values are limited to 256 bytes");
    }

    #[tokio::test]
    async fn every_error_has_the_same_shape() {
        for (r, status) in [
            (bad_request("x"), StatusCode::BAD_REQUEST),
            (busy("x"), StatusCode::SERVICE_UNAVAILABLE),
            (error(StatusCode::NOT_FOUND, "x"), StatusCode::NOT_FOUND),
        ] {
            assert_eq!(body(r).await, (status, serde_json::json!({ "error": "x" })));
        }
    }
}
