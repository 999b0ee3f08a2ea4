//! The registry's cheap read views for routers and planners: every rank's current
//! load and its performance-model sums, one lock per rank and no histograms. The
//! values themselves live in [`super::load`] and [`super::model`]; this file is
//! where they are read out of the registry.

use super::fields::WALL_TIME;
use super::load::LoadSample;
use super::model::ModelSums;
use super::rank::{Liveness, RankKey};
use super::window::FrameMoments;
use super::{RankFilter, RankHandle, Registry};

/// One rank's load, read at request time.
#[derive(Debug, Clone)]
pub struct RankLoad {
    /// Identity.
    pub key: RankKey,
    /// Liveness (stale ranks keep their last load, flagged by this).
    pub liveness: Liveness,
    /// Milliseconds since the latest frame of any kind.
    pub age_ms: u64,
    /// Receive time of the latest frame of any kind, Unix ns.
    pub last_frame_unix_ns: u64,
    /// The load of the latest frame of any kind.
    pub sample: LoadSample,
    /// wall_time of the latest iteration, seconds.
    pub last_wall_time: Option<f64>,
    /// Mean wall_time over the shortest configured window, seconds.
    pub smoothed_wall_time: Option<f64>,
}

/// Loads of the ranks that passed a filter.
#[derive(Debug, Clone)]
pub struct LoadsSnapshot {
    /// When, Unix ns.
    pub at_unix_ns: u64,
    /// The window `smoothed_wall_time` averages over, seconds.
    pub smoothing_secs: u64,
    /// Ranks, sorted by key.
    pub ranks: Vec<RankLoad>,
}

impl Registry {
    /// The load of every rank passing `filter`. Cheap: one lock per rank, no
    /// histograms, so routers may poll it often.
    pub fn loads(&self, filter: &RankFilter) -> LoadsSnapshot {
        let now = self.now();
        let smoothing_secs = self.config.windows.iter().copied().min().unwrap_or(10);
        let mut ranks: Vec<RankLoad> = self
            .matching(filter)
            .iter()
            .map(|h| {
                let rank = h.lock();
                let mut w = FrameMoments::default();
                rank.merge_window_into(now.sec, smoothing_secs, &mut w);
                RankLoad {
                    key: rank.key.clone(),
                    liveness: rank.liveness,
                    age_ms: now
                        .instant
                        .saturating_duration_since(rank.last_frame_at)
                        .as_millis() as u64,
                    last_frame_unix_ns: rank.last_frame_unix_ns,
                    sample: rank.load,
                    last_wall_time: rank.last.as_ref().map(|l| l.metrics.wall_time.0),
                    smoothed_wall_time: (w.count > 0).then(|| w.summary(WALL_TIME).mean),
                }
            })
            .collect();
        ranks.sort_by(|a, b| a.key.cmp(&b.key));
        LoadsSnapshot {
            at_unix_ns: now.unix_ns,
            smoothing_secs,
            ranks,
        }
    }
}

/// The model sums of the ranks that passed a filter, and of their engines.
#[derive(Debug, Clone)]
pub struct ModelsSnapshot {
    /// When, Unix ns.
    pub at_unix_ns: u64,
    /// The window the sums cover, seconds.
    pub window_secs: u64,
    /// Ranks, sorted by key, with their liveness.
    pub ranks: Vec<(RankKey, Liveness, ModelSums)>,
    /// Per engine (configured order): the sums of its matching ranks, and how many.
    pub engines: Vec<(ModelSums, usize)>,
}

impl Registry {
    /// The model window, seconds (the longest configured window).
    pub fn model_window_secs(&self) -> u64 {
        self.config.windows.iter().copied().max().unwrap_or(1)
    }

    /// The performance-model sums of every rank passing `filter` (no fit yet: the
    /// caller fits what it needs).
    pub fn models(&self, filter: &RankFilter) -> ModelsSnapshot {
        let now = self.now();
        let mut engines = vec![(ModelSums::default(), 0usize); self.engines.len()];
        let mut ranks: Vec<_> = self
            .matching(filter)
            .iter()
            .map(|h| {
                let rank = h.lock();
                let mut sums = ModelSums::default();
                rank.model.merge_into(now.sec, &mut sums);
                let e = &mut engines[rank.key.engine];
                e.0.merge(&sums);
                e.1 += 1;
                (rank.key.clone(), rank.liveness, sums)
            })
            .collect();
        ranks.sort_by(|a, b| a.0.cmp(&b.0));
        ModelsSnapshot {
            at_unix_ns: now.unix_ns,
            window_secs: self.model_window_secs(),
            ranks,
            engines,
        }
    }
}

impl Registry {
    /// Handles of the ranks passing `filter` (the map's read lock is held only while
    /// they are collected).
    fn matching(&self, filter: &RankFilter) -> Vec<RankHandle> {
        let map = self.ranks.read();
        map.iter()
            .filter(|(k, _)| filter.matches(self, k))
            .map(|(_, h)| h.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sequence::SeqEvent;
    use crate::state::{EngineInfo, RankCache, StateConfig};
    use crate::wire::ForwardPassMetrics;
    use crate::wire::{Count, Real};
    use std::sync::Arc;

    fn busy() -> ForwardPassMetrics {
        let mut m = ForwardPassMetrics {
            version: 1,
            worker_id: "w".into(),
            wall_time: Real(0.02),
            ..Default::default()
        };
        m.scheduled_requests.num_prefill_requests = Count(1);
        m.scheduled_requests.num_decode_requests = Count(7);
        m.scheduled_requests.sum_decode_kv_tokens = Count(9000);
        m.scheduled_requests.sum_prefill_kv_tokens = Count(100);
        m.queued_requests.num_prefill_requests = Count(3);
        m.queued_requests.num_decode_requests = Count(1);
        m.queued_requests.sum_prefill_tokens = Count(4000);
        m
    }

    #[test]
    fn a_heartbeat_resets_the_load_but_not_the_last_iteration() {
        let reg = Registry::new(
            StateConfig::default(),
            vec![EngineInfo {
                name: "e".into(),
                labels: vec![],
            }],
        );
        let ep: Arc<str> = "tcp://x:1".into();
        let mut cache = RankCache::default();
        let now = reg.now();
        assert!(reg.ingest(&mut cache, 0, &ep, 0, SeqEvent::First, busy(), &now));
        let l = reg.loads(&RankFilter::default());
        let r = &l.ranks[0];
        assert_eq!(r.liveness, Liveness::Busy);
        assert_eq!(
            r.sample,
            LoadSample {
                running_requests: 8,
                waiting_requests: 4,
                kv_tokens: 9100,
                queued_prefill_tokens: 4000,
                heartbeat: false
            }
        );
        assert_eq!(r.last_wall_time, Some(0.02));
        assert_eq!(r.smoothed_wall_time, Some(0.02));

        let hb = ForwardPassMetrics {
            version: 1,
            worker_id: "w".into(),
            ..Default::default()
        };
        assert!(reg.ingest(&mut cache, 0, &ep, 1, SeqEvent::InOrder, hb, &reg.now()));
        let r = &reg.loads(&RankFilter::default()).ranks[0];
        assert_eq!(r.liveness, Liveness::Idle);
        assert_eq!(
            r.sample,
            LoadSample {
                heartbeat: true,
                ..Default::default()
            }
        );
        assert_eq!(
            r.last_wall_time,
            Some(0.02),
            "the latest iteration is still reported"
        );
    }
}
