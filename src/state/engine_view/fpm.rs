//! The FPM side of an engine view: per rank, the state, iteration rate, wall-time
//! quantiles and queue a planner reads next to the engine's own metrics, from the
//! same registry snapshot `/v1/ranks` serves.

use crate::state::load_snapshots::{RankSnapshot, SnapshotJoin};
use crate::state::rank::Liveness;
use crate::state::{RankFilter, Registry};
use serde::Serialize;

/// wall_time quantiles of one rank over a window, seconds (`null` without iterations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WallTime {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// One FPM rank, summarized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FpmRank {
    /// The publisher's worker_id.
    pub worker_id: String,
    /// Data-parallel rank.
    pub dp_rank: u64,
    /// busy, idle or stale.
    pub state: Liveness,
    /// Milliseconds since its latest frame of any kind.
    pub age_ms: u64,
    /// Iterations per second over the window.
    pub iterations_per_second: f64,
    /// wall_time quantiles over the window.
    pub wall_time_seconds: WallTime,
    /// Requests scheduled in its latest frame (prefill plus decode; 0 after a heartbeat).
    pub running_requests: u64,
    /// Requests queued in its latest frame.
    pub queued_requests: u64,
    /// Prompt tokens of the queued prefill requests in its latest frame.
    pub queued_prefill_tokens: u64,
    /// Its engine's load snapshot of the same dp rank: absent for an engine without a
    /// `load_snapshot`, null for a rank without a snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_snapshot: Option<Option<RankSnapshot>>,
}

/// An engine's FPM ranks, summarized over the shortest configured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FpmSummary {
    /// The window the rates and quantiles cover, seconds.
    pub window_seconds: u64,
    /// Ranks busy, idle and stale.
    pub busy: u64,
    /// Idle ranks.
    pub idle: u64,
    /// Stale ranks.
    pub stale: u64,
    /// Iterations per second of all its ranks.
    pub iterations_per_second: f64,
    /// Its ranks, sorted by worker_id and dp_rank.
    pub ranks: Vec<FpmRank>,
}

/// The FPM summary of engine `engine`, each rank joined with `join` (the engines' load
/// snapshots); `None` when no such engine is configured.
pub fn fpm_summary(
    registry: &Registry,
    engine: &str,
    join: Option<&SnapshotJoin>,
) -> Option<FpmSummary> {
    let index = registry.engines.iter().position(|e| e.name == engine)?;
    let join = join.filter(|j| j.has_source(index));
    let filter = RankFilter {
        engine: Some(engine.to_string()),
        ..RankFilter::default()
    };
    let snap = registry.snapshot(&filter);
    let loads = registry.loads(&filter);
    let (wi, secs) = registry
        .config
        .windows
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|&(_, s)| s)
        .unwrap_or((0, 10));
    let per_s = |count: u64| count as f64 / secs.max(1) as f64;
    let quantile = |count: u64, v: f64| (count > 0).then_some(v);
    let mut out = FpmSummary {
        window_seconds: secs,
        busy: 0,
        idle: 0,
        stale: 0,
        iterations_per_second: 0.0,
        ranks: Vec::with_capacity(snap.ranks.len()),
    };
    for r in &snap.ranks {
        match r.liveness {
            Liveness::Busy => out.busy += 1,
            Liveness::Idle => out.idle += 1,
            _ => out.stale += 1,
        }
        let w = r.windows.get(wi);
        let count = w.map_or(0, |w| w.moments.count);
        let q = w.map_or([0.0; 4], |w| w.wall_time_quantiles);
        let load = loads
            .ranks
            .iter()
            .find(|l| l.key == r.key)
            .map(|l| l.sample)
            .unwrap_or_default();
        out.iterations_per_second += per_s(count);
        out.ranks.push(FpmRank {
            worker_id: r.key.worker_id.to_string(),
            dp_rank: r.key.dp_rank,
            state: r.liveness,
            age_ms: r.age_ms,
            iterations_per_second: per_s(count),
            wall_time_seconds: WallTime {
                p50: quantile(count, q[0]),
                p90: quantile(count, q[1]),
                p99: quantile(count, q[2]),
                max: quantile(count, q[3]),
            },
            running_requests: load.running_requests,
            queued_requests: load.waiting_requests,
            queued_prefill_tokens: load.queued_prefill_tokens,
            load_snapshot: join.map(|j| j.get(index, r.key.dp_rank).cloned()),
        });
    }
    Some(out)
}

#[cfg(test)]
#[path = "fpm_tests.rs"]
mod tests;
