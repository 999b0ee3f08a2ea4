//! The router's view of a rank: how loaded it is right now, from its latest frame of
//! any kind. An iteration frame says what ran and what waits; a heartbeat says the
//! rank is idle with nothing scheduled or queued, so it must reset the load, even
//! though it never replaces the latest iteration kept for `/v1/ranks`.

use super::fields::WALL_TIME;
use super::rank::{Liveness, RankKey};
use super::window::FrameMoments;
use super::{RankFilter, Registry};
use crate::wire::ForwardPassMetrics;

/// The load carried by one frame (heartbeats included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// Requests executed in the iteration: scheduled prefill plus decode.
    pub running_requests: u64,
    /// Requests waiting: queued prefill plus decode.
    pub waiting_requests: u64,
    /// KV tokens in use: scheduled decode KV context plus prefill KV read.
    pub kv_tokens: u64,
    /// Prompt tokens of the queued prefill requests.
    pub queued_prefill_tokens: u64,
    /// Whether the frame was a heartbeat.
    pub heartbeat: bool,
}

impl LoadSample {
    /// The load a frame reports.
    #[inline]
    pub fn of(m: &ForwardPassMetrics) -> Self {
        let s = &m.scheduled_requests;
        let q = &m.queued_requests;
        LoadSample {
            running_requests: s
                .num_prefill_requests
                .0
                .saturating_add(s.num_decode_requests.0),
            waiting_requests: q
                .num_prefill_requests
                .0
                .saturating_add(q.num_decode_requests.0),
            kv_tokens: s
                .sum_decode_kv_tokens
                .0
                .saturating_add(s.sum_prefill_kv_tokens.0),
            queued_prefill_tokens: q.sum_prefill_tokens.0,
            heartbeat: m.is_heartbeat(),
        }
    }
}

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
        let handles: Vec<_> = {
            let map = self.ranks.read();
            map.iter()
                .filter(|(k, _)| filter.matches(self, k))
                .map(|(_, h)| h.clone())
                .collect()
        };
        let mut ranks: Vec<RankLoad> = handles
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sequence::SeqEvent;
    use crate::state::{EngineInfo, RankCache, StateConfig};
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
