//! Tunables of the state stage and the engines it is configured with.

use super::labels;
use serde::Serialize;
use std::time::Duration;

/// Tunables of the state stage.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Rolling-window lengths in whole seconds (default 10 and 60).
    pub windows: Vec<u64>,
    /// Silence after which a rank is stale (default 3 s: three missed heartbeats).
    pub stale_after: Duration,
    /// Silence after which a rank expires and its series disappear (default 5 min).
    pub expire_after: Duration,
    /// Most ranks tracked at once; frames of further ranks are refused and counted.
    pub max_ranks: usize,
    /// Cap on worker_id bytes kept as a label value.
    pub max_label_bytes: usize,
    /// Capacity of the event stream's ring buffer (events a slow client may fall behind).
    pub stream_buffer: usize,
    /// Which per-rank families `/metrics` writes, per engine (`--rank-detail`).
    pub rank_detail: super::detail::RankDetails,
    /// Room for engines a source discovers at run time (NATS scopes, one per node).
    pub dynamic_engines: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            windows: vec![10, 60],
            stale_after: Duration::from_secs(3),
            expire_after: Duration::from_secs(300),
            max_ranks: 4096,
            max_label_bytes: labels::DEFAULT_MAX_LABEL_BYTES,
            stream_buffer: 16_384,
            rank_detail: Default::default(),
            dynamic_engines: super::engines::DYNAMIC_ENGINES,
        }
    }
}

/// One configured engine: a name and the labels every one of its series carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineInfo {
    /// The `engine` label value.
    pub name: String,
    /// Extra labels (e.g. model, role), in configuration order.
    pub labels: Vec<(String, String)>,
}
