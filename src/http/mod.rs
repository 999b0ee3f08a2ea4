//! The HTTP side: `/metrics` for Prometheus, `/v1/*` JSON for planners and routers,
//! health and readiness. Rendering runs on the blocking pool so a large scrape never
//! stalls the ingest tasks sharing the runtime.

mod feeds;
mod handlers;

use crate::state::Registry;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Limits and options of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most concurrent `/v1/stream` clients; more get 503.
    pub max_streams: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { max_streams: 256 }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The ranks.
    pub registry: Arc<Registry>,
    /// Exporter start, Unix seconds (for `process_start_time_seconds`).
    pub start_unix_secs: f64,
    /// Set once the listener is bound.
    pub http_up: Arc<AtomicBool>,
    /// Permits for stream clients.
    pub streams: Arc<Semaphore>,
    /// Turns true at shutdown: open streams end so the server can drain.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// State for a registry with the given limits.
    pub fn new(
        registry: Arc<Registry>,
        config: &HttpConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let start_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        AppState {
            registry,
            start_unix_secs,
            http_up: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            shutdown,
        }
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(handlers::index))
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/v1/ranks", get(handlers::ranks))
        .route("/v1/stream", get(handlers::stream))
        .route("/v1/loads", get(feeds::loads))
        .route("/get_load", get(feeds::get_load))
        .route("/v1/model", get(feeds::model))
        .with_state(state)
}
