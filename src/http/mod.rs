//! The HTTP side: `/metrics` for Prometheus, `/v1/*` JSON for planners and routers,
//! health and readiness, and the live page at `/`. Rendering runs on the blocking pool so a large scrape never
//! stalls the ingest tasks sharing the runtime.

pub mod auth;
mod engine;
mod engine_load;
pub mod engines;
mod health;
mod live;
mod loads_model;
mod metrics;
pub mod query;
mod ranks;
pub mod serve;

use crate::config::{ApiToken, HttpSettings};
use crate::state::Registry;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The ranks.
    pub registry: Arc<Registry>,
    /// The subscribers' endpoints, for `/readyz` and `fpm_endpoint_*`.
    pub endpoints: Arc<[Arc<crate::source::endpoint::EndpointStats>]>,
    /// Exporter start, Unix seconds (for `process_start_time_seconds`).
    pub start_unix_secs: f64,
    /// The listeners in their accept loops (the `http` flag of `/readyz`).
    pub listening: Arc<serve::Listening>,
    /// Timers of every connection.
    pub timeouts: serve::ServeTimeouts,
    /// Permits for stream clients.
    pub streams: Arc<Semaphore>,
    /// Permits for `/metrics` renders: a budget of their own, so that stalled or slow
    /// scrapes never take the blocking threads the JSON endpoints render on.
    pub scrapes: Arc<Semaphore>,
    /// Counters of the limits below (and of skipped stream snapshots), on `/metrics`.
    pub http: Arc<crate::sink::serving::HttpStats>,
    /// The NATS client's counters (`fpm_nats_*` on `/metrics`), when NATS is on.
    pub nats: Option<Arc<crate::source::nats::NatsStats>>,
    /// The `/v1/stream` fan-out of registry events.
    pub stream: Arc<crate::sink::stream::hub::StreamHub>,
    /// Renderer of stream snapshot events, with its own budget.
    pub snapshots: Arc<crate::sink::stream::snapshots::Snapshots>,
    /// Turns true at shutdown: open streams end so the server can drain.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Bearer token of the JSON API, if any.
    pub api_token: Option<ApiToken>,
    /// Whether `/metrics` requires the token too.
    pub protect_metrics: bool,
    /// The engines' multiprocess directories (`/engine_metrics`), if any engine has one.
    pub engine_metrics: Option<Arc<crate::source::multiproc::EngineMetrics>>,
    /// The recorder's counters (`fpm_record_*` on `/metrics`), when `--record` is on.
    pub recorder: Option<Arc<crate::capture::recorder::RecordStats>>,
    /// Remote engine workers scraped in the background (`--scrape`), if any.
    pub workers: Option<Arc<crate::source::scrape::Workers>>,
    /// The two latest reads of each local multiprocess directory, for `/v1/engines`.
    pub local_reads: Arc<engines::LocalReads>,
    /// The engines' load snapshots (`load_snapshot`), if any engine has a source.
    pub load_snapshots: Option<Arc<crate::source::load_snapshot::LoadSnapshots>>,
    /// What `/v1/loads` says of each such engine's SGLang (`version`, accelerators).
    pub load_meta: Arc<std::collections::BTreeMap<usize, crate::sink::load_snapshot::DocumentMeta>>,
}

impl AppState {
    /// State for a registry with the given limits.
    pub fn new(
        registry: Arc<Registry>,
        config: &HttpSettings,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let start_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let http = Arc::new(crate::sink::serving::HttpStats::default());
        AppState {
            stream: crate::sink::stream::hub::StreamHub::new(registry.clone()),
            registry,
            endpoints: Vec::new().into(),
            start_unix_secs,
            listening: Default::default(),
            timeouts: serve::ServeTimeouts {
                idle: config.idle_timeout,
                write: config.write_timeout,
            },
            streams: Arc::new(Semaphore::new(config.max_streams)),
            scrapes: Arc::new(Semaphore::new(config.max_scrapes)),
            snapshots: crate::sink::stream::snapshots::Snapshots::for_this_machine(http.clone()),
            http,
            nats: None,
            shutdown,
            api_token: config.api_token.clone(),
            protect_metrics: config.protect_metrics,
            engine_metrics: None,
            recorder: None,
            workers: None,
            local_reads: Default::default(),
            load_snapshots: None,
            load_meta: Default::default(),
        }
    }
}

/// Middleware: the sources fold in the frames they hold before the handler reads.
async fn caught_up(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    registry.catch_up().await;
    next.run(req).await
}

/// Which endpoints one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything (the default: one listen address).
    All,
    /// `/metrics` plus health and readiness (the `--metrics-listen` address).
    Metrics,
    /// The JSON API plus health and readiness (`--listen` when `--metrics-listen` is set).
    Api,
}

/// The router of one listener. Health, readiness, the index and the live page (which
/// holds no data) stay open; the JSON API (and `/metrics` with `protect_metrics`) need
/// the bearer token when one is set. The page is served where the API it reads is.
pub fn router_for(state: AppState, routes: Routes) -> Router {
    let open = Router::new()
        .route("/api", get(health::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/health", get(engine_load::health))
        .route("/engines/{engine}/health", get(engine_load::engine_health));
    // Reads of the FPM state first take in what the sources hold (state::intake).
    let fresh = || axum::middleware::from_fn_with_state(state.registry.clone(), caught_up);
    let mut metrics = Router::new()
        .route("/metrics", get(metrics::metrics).route_layer(fresh()))
        .route("/engine_metrics", get(engine::engine_metrics));
    let rank_loads = get(loads_model::loads).route_layer(fresh());
    let mut api = Router::new()
        .route("/v1/ranks", get(ranks::ranks).route_layer(fresh()))
        .route("/v1/stream", get(ranks::stream))
        .route("/v1/rank_loads", rank_loads)
        .route("/v1/loads", get(engine_load::loads))
        .route("/engines/{engine}/v1/loads", get(engine_load::engine_loads))
        .route("/get_load", get(loads_model::get_load).route_layer(fresh()))
        .route("/v1/model", get(loads_model::model).route_layer(fresh()))
        .route("/v1/engines", get(engines::engines).route_layer(fresh()));
    if let Some(token) = &state.api_token {
        let guard = || axum::middleware::from_fn_with_state(token.clone(), auth::require_token);
        api = api.route_layer(guard());
        if state.protect_metrics {
            metrics = metrics.route_layer(guard());
        }
    }
    let page = Router::new().route("/", get(live::page));
    let router = match routes {
        Routes::All => open.merge(page).merge(metrics).merge(api),
        Routes::Metrics => open.merge(metrics),
        Routes::Api => open.merge(page).merge(api),
    };
    router.with_state(state)
}
