//! The `/v1/engines` document: per worker, its engine view and its engine's FPM
//! summary, the shape proto/schema/engines.schema.json describes.

use super::fpm::FpmSummary;
use super::EngineView;
use serde::Serialize;

/// One scraped worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerEntry {
    /// The configured engine it belongs to (the `engine` label).
    pub engine: String,
    /// The worker's address as configured (the `worker_addr` label).
    pub worker_addr: String,
    /// Its typed view; `null` until a scrape succeeded.
    pub view: Option<EngineView>,
    /// Its engine's FPM ranks; `null` when the engine has no ZMQ endpoint.
    pub fpm: Option<FpmSummary>,
}

/// The whole document.
#[derive(Debug, Clone, Serialize)]
pub struct EnginesDocument {
    /// When it was assembled, Unix ns.
    pub generated_at_ns: u64,
    /// Every worker, in configuration order.
    pub workers: Vec<WorkerEntry>,
}
