//! Optional bearer-token protection of the HTTP endpoints. The token guards this
//! service's own API only: the exporter never needs, stores or forwards any engine
//! credential.

use crate::config::ApiToken;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
        [(header::WWW_AUTHENTICATE, "Bearer")],
        super::query::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
    )
        .into_response()
}
