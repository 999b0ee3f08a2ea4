//! Consistent views of the ranks and their engines' aggregates, taken at one instant.

use super::imbalance::{self, Balance, Straggler};
use super::rank::{Counters, LastFrame, Liveness, RankKey};
use super::window::FrameMoments;
use super::{model, quantiles, RankFilter, RankHandle, Registry};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Registry {
    /// A consistent view of the ranks that pass `filter`, with window statistics.
    pub fn snapshot(&self, filter: &RankFilter) -> Snapshot {
        let now = self.now();
        let nwin = self.config.windows.len();
        // Handles first: a rank's engine is registered before the rank, so every
        // handle's engine index is below the length read after them.
        let (handles, retired): (Vec<RankHandle>, Vec<(u64, u64)>) = {
            let map = self.ranks.read();
            // Sorted here, as (key, handle) pairs: sorting the snapshots afterwards
            // moved each rank's whole snapshot (windows inline) a dozen times.
            let mut keyed: Vec<(&RankKey, &RankHandle)> = map
                .iter()
                .filter(|(k, _)| filter.matches(self, k))
                .collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let handles: Vec<RankHandle> = keyed.into_iter().map(|(_, h)| h.clone()).collect();
            // Expired ranks' totals as of the ranks listed here: a rank removed from now
            // on is still in the list (its counters frozen), and not in these totals.
            let retired = if filter.worker_id.is_none() && filter.dp_rank.is_none() {
                (0..self.engines.len())
                    .map(|e| {
                        let r = &self.retired[e];
                        (r.iterations.load(Relaxed), r.wall_time_ns.load(Relaxed))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (handles, retired)
        };
        let n_engines = self.engines.len();
        let mut engines: Vec<EngineSnapshot> = (0..n_engines)
            .map(|engine| EngineSnapshot {
                engine,
                busy: 0,
                idle: 0,
                stale: 0,
                expired_total: self.expired[engine].load(Relaxed),
                windows: self.empty_windows(),
                balance: (0..nwin).map(|_| Balance::default()).collect(),
                model: model::ModelSums::default(),
                iterations_total: retired.get(engine).map_or(0, |r| r.0),
                wall_time_ns_total: retired.get(engine).map_or(0, |r| r.1),
            })
            .collect();
        let mut engine_counts: Vec<Vec<quantiles::Counts>> = (0..n_engines)
            .map(|_| (0..nwin).map(|_| quantiles::Counts::default()).collect())
            .collect();
        let mut scratch = quantiles::Counts::default();
        let mut ranks = Vec::with_capacity(handles.len());
        for handle in handles {
            let rank = handle.lock();
            let eng = &mut engines[rank.key.engine];
            eng.iterations_total = eng
                .iterations_total
                .saturating_add(rank.counters.iterations);
            eng.wall_time_ns_total = eng
                .wall_time_ns_total
                .saturating_add(rank.counters.wall_time_ns);
            match rank.liveness {
                Liveness::Busy => eng.busy += 1,
                Liveness::Idle => eng.idle += 1,
                _ => eng.stale += 1,
            }
            let mut windows = self.empty_windows();
            for (i, w) in windows.iter_mut().enumerate() {
                rank.merge_window_into(now.sec, w.secs, &mut w.moments);
                eng.windows[i].moments.merge(&w.moments);
                scratch.clear();
                rank.merge_quantiles_into(now.sec, i, &mut scratch);
                w.wall_time_quantiles = scratch.quantiles();
                engine_counts[rank.key.engine][i].merge(&scratch);
            }
            let mut model = model::ModelSums::default();
            rank.model.merge_into(now.sec, &mut model);
            eng.model.merge(&model);
            ranks.push(RankSnapshot {
                key: rank.key.clone(),
                endpoint: rank.endpoint.clone(),
                liveness: rank.liveness,
                last_frame_unix_ns: rank.last_frame_unix_ns,
                age_ms: now
                    .instant
                    .saturating_duration_since(rank.last_frame_at)
                    .as_millis() as u64,
                last: rank.last.clone(),
                counters: rank.counters,
                windows,
                straggler: smallvec::smallvec![None; nwin],
                model,
            });
        }
        imbalance::fill(&mut ranks, &mut engines);
        for (eng, counts) in engines.iter_mut().zip(&engine_counts) {
            for (w, c) in eng.windows.iter_mut().zip(counts) {
                w.wall_time_quantiles = c.quantiles();
            }
        }
        engines.retain(|e| {
            let name = &self.engines[e.engine].name;
            filter.engine.as_deref().is_none_or(|n| name == n) && !filter.skips(e.engine)
        });
        Snapshot {
            at_unix_ns: now.unix_ns,
            ranks,
            engines,
        }
    }

    fn empty_windows(&self) -> Windows {
        self.config
            .windows
            .iter()
            .map(|&secs| WindowSnapshot {
                secs,
                moments: FrameMoments::default(),
                wall_time_quantiles: [0.0; 4],
            })
            .collect()
    }
}

/// The statistics of every configured window, in configured order, inline for up to
/// two windows: a snapshot's ranks are then one block (for a thousand ranks, above
/// the mmap threshold: unmapped when the scrape ends) where a block of windows per
/// rank per scrape kept ~2 MiB of free chunks resident between scrapes (fpm-bench
/// `scrape`: RSS 16.3 -> 14.5 KiB per busy rank).
pub type Windows = smallvec::SmallVec<[WindowSnapshot; 2]>;

/// Statistics of one window.
#[derive(Debug, Clone)]
pub struct WindowSnapshot {
    /// Window length in seconds.
    pub secs: u64,
    /// Merged moments of every field.
    pub moments: FrameMoments,
    /// wall_time p50, p90, p99, max in seconds.
    pub wall_time_quantiles: [f64; 4],
}

/// One rank as the sinks see it.
#[derive(Debug, Clone)]
pub struct RankSnapshot {
    /// Identity.
    pub key: RankKey,
    /// Endpoint address.
    pub endpoint: Arc<str>,
    /// Liveness.
    pub liveness: Liveness,
    /// Latest frame of any kind, Unix ns.
    pub last_frame_unix_ns: u64,
    /// Milliseconds since the latest frame of any kind.
    pub age_ms: u64,
    /// Latest iteration frame.
    pub last: Option<LastFrame>,
    /// Cumulative counters.
    pub counters: Counters,
    /// Window statistics, in configured order.
    pub windows: Windows,
    /// Time per token against the engine's other ranks, per window (`None` when the
    /// rank is not counted: see [`imbalance`]).
    pub straggler: smallvec::SmallVec<[Option<Straggler>; 2]>,
    /// Performance-model sums over the longest window.
    pub model: model::ModelSums,
}

/// One engine's all-ranks aggregate.
#[derive(Debug, Clone)]
pub struct EngineSnapshot {
    /// Engine index.
    pub engine: usize,
    /// Ranks busy.
    pub busy: u64,
    /// Ranks idle.
    pub idle: u64,
    /// Ranks stale.
    pub stale: u64,
    /// Ranks expired since start.
    pub expired_total: u64,
    /// Merged window statistics of all its ranks.
    pub windows: Windows,
    /// How evenly the work is spread over its ranks, per window.
    pub balance: smallvec::SmallVec<[Balance; 2]>,
    /// Performance-model sums of all its ranks over the longest window.
    pub model: model::ModelSums,
    /// Iterations of all its ranks since the exporter started, expired ranks included
    /// (only the filtered ranks when the snapshot is filtered by worker or rank).
    pub iterations_total: u64,
    /// Their wall_time sum, in nanoseconds (same scope).
    pub wall_time_ns_total: u64,
}

/// Everything the sinks need, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When, Unix ns.
    pub at_unix_ns: u64,
    /// Ranks, sorted by key.
    pub ranks: Vec<RankSnapshot>,
    /// Engines, in configured order.
    pub engines: Vec<EngineSnapshot>,
}
