//! Optional bearer-token protection of the HTTP endpoints. The token guards this
//! service's own API only: the exporter never needs, stores or forwards any engine
//! credential.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// A bearer token, kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl ApiToken {
    /// Wraps a token; surrounding whitespace (a file's trailing newline) is dropped.
    /// Returns `None` for an empty token.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| ApiToken(t.into()))
    }

    /// Whether `presented` equals the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let diff = presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Middleware: lets the request through only with `Authorization: Bearer <token>`.
pub async fn require_token(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if presented.is_some_and(|p| token.matches(p)) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens_only() {
        let t = ApiToken::new("s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret "));
        assert!(!t.matches(b"S3cret"));
        assert!(ApiToken::new(" \n").is_none());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
