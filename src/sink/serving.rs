//! Counters of the serving side's limits. The HTTP side and the stream's snapshot
//! renderer count into them, the Prometheus sink reports them; they live among the
//! sinks (not in the state) because the sinks come before `http` in the data path.

use std::sync::atomic::AtomicU64;

/// Counters of the HTTP side's limits, reported on `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// `/metrics` requests answered 503 because `--max-scrapes` renders were running.
    pub scrapes_rejected: AtomicU64,
    /// Stream snapshots skipped because the snapshot budget was busy.
    pub snapshots_skipped: AtomicU64,
    /// Connections dropped because a response write made no progress in time.
    pub write_timeouts: AtomicU64,
}
