//! The one simulated scheduler of the publisher side: the demo engine and the load
//! generator both publish its frames, so the cost model lives in one place.

use crate::wire::{Count, ForwardPassMetrics, QueuedRequests, Real, ScheduledRequests};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Cost model of the simulated GPU, seconds: base + per prefill token + per decode
/// request + per decode KV token (what `/v1/model` should recover from the frames).
pub const COST: [f64; 4] = [0.004, 25e-6, 60e-6, 40e-9];

/// A rank's simulated scheduler: a decode batch that drifts, chunked prefills that
/// come and go, a queue that builds and drains, and wall_time from a cost model.
/// Cheap enough (no per-request lists) to run at hundreds of thousands of frames/s.
pub struct FrameModel {
    rng: SmallRng,
    frame: ForwardPassMetrics,
    decoding: u64,
    avg_ctx: f64,
    waiting: u64,
    work: f64,
    slowness: f64,
}

impl FrameModel {
    /// A model for one rank.
    pub fn new(worker_id: &str, dp_rank: u64, seed: u64) -> Self {
        FrameModel {
            rng: SmallRng::seed_from_u64(seed ^ dp_rank.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            frame: ForwardPassMetrics {
                version: 1,
                worker_id: worker_id.to_owned(),
                dp_rank,
                ..Default::default()
            },
            decoding: 32,
            avg_ctx: 1500.0,
            waiting: 2,
            work: 1.0,
            slowness: 1.0,
        }
    }

    /// The same rank skewed: `work` times the prefill chunk and decode batch of an
    /// even rank (a router that favours it), each iteration `slowness` times longer
    /// than the cost model says (a slow GPU). 1 and 1 are the unskewed model; the
    /// random draws are the same either way.
    pub fn skewed(mut self, work: f64, slowness: f64) -> Self {
        self.work = work;
        self.slowness = slowness;
        self
    }

    /// The heartbeat this rank sends while idle (every field at its default).
    pub fn heartbeat(&mut self) -> &mut ForwardPassMetrics {
        let f = &mut self.frame;
        f.wall_time = Real(0.0);
        f.scheduled_requests = ScheduledRequests::default();
        f.queued_requests = QueuedRequests::default();
        f
    }

    /// Ends the running work, as when a scheduler drains before an idle spell: the
    /// next busy spell starts from an empty batch and queue.
    pub fn drain(&mut self) {
        self.decoding = 0;
        self.waiting = 0;
    }

    /// The next iteration frame (counter_id is stamped by the publisher).
    pub fn next_iteration(&mut self) -> &mut ForwardPassMetrics {
        let rng = &mut self.rng;
        // Decode batch: random walk in 0..=256, context slowly drifting.
        let step: i64 = rng.gen_range(-3..=3);
        self.decoding = (self.decoding as i64 + step).clamp(0, 256) as u64;
        self.avg_ctx = (self.avg_ctx * rng.gen_range(0.98..1.02)).clamp(200.0, 16_000.0);
        // Arrivals join the queue; about one iteration in five runs a prefill chunk.
        if rng.gen_bool(0.2) {
            self.waiting += rng.gen_range(0..4);
        }
        let prefilling = self.waiting > 0 && rng.gen_bool(0.2);
        let (n_prefill, chunk, var_len, cached) = if prefilling {
            let n = rng.gen_range(1..=self.waiting.min(4));
            self.waiting -= n;
            let chunk = rng.gen_range(256..=8192u64);
            let cached = if rng.gen_bool(0.4) {
                rng.gen_range(0..=chunk)
            } else {
                0
            };
            // Scaled after the draws, so a skewed rank draws what an even one does.
            let (chunk, cached) = (
                (chunk as f64 * self.work) as u64,
                (cached as f64 * self.work) as u64,
            );
            let var = if n > 1 { rng.gen_range(1e4..4e7) } else { 0.0 };
            (n, chunk, var, cached)
        } else {
            (0, 0, 0.0, 0)
        };
        let decoding = (self.decoding as f64 * self.work) as u64;
        let decode_kv = (decoding as f64 * self.avg_ctx) as u64;
        let wall = (COST[0]
            + COST[1] * chunk as f64
            + COST[2] * decoding as f64
            + COST[3] * decode_kv as f64)
            * rng.gen_range(0.95..1.05)
            * self.slowness;
        let queued_tokens = self.waiting * rng.gen_range(200..3000);
        let preempted = if rng.gen_bool(0.05) {
            rng.gen_range(1..4u64)
        } else {
            0
        };
        let f = &mut self.frame;
        f.wall_time = Real(wall);
        f.scheduled_requests = ScheduledRequests {
            num_prefill_requests: Count(n_prefill),
            sum_prefill_tokens: Count(chunk),
            var_prefill_length: Real(var_len),
            sum_prefill_kv_tokens: Count(cached),
            num_decode_requests: Count(decoding),
            sum_decode_kv_tokens: Count(decode_kv),
            var_decode_kv_tokens: Real(if decoding > 1 {
                self.avg_ctx * self.avg_ctx * 0.3
            } else {
                0.0
            }),
        };
        f.queued_requests = QueuedRequests {
            num_prefill_requests: Count(self.waiting),
            sum_prefill_tokens: Count(queued_tokens),
            var_prefill_length: Real(if self.waiting > 1 {
                rng.gen_range(1e4..4e6)
            } else {
                0.0
            }),
            num_decode_requests: Count(preempted),
            sum_decode_kv_tokens: Count(preempted * self.avg_ctx as u64),
            var_decode_kv_tokens: Real(if preempted > 1 { 9e4 } else { 0.0 }),
        };
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::decode::decode_payload;
    use crate::wire::encode::encode_payload;

    /// Every iteration the model produces passes the exporter's own decoder (finite,
    /// non-negative, v1) and is a busy iteration, and the values actually vary.
    #[test]
    fn model_frames_are_valid_and_varied() {
        let mut m = FrameModel::new("w", 3, 1);
        let mut walls = std::collections::BTreeSet::new();
        let mut prefills = 0;
        for _ in 0..5000 {
            let f = m.next_iteration().clone();
            let back = decode_payload(&encode_payload(&f)).expect("decodes");
            assert_eq!(back, f);
            walls.insert(f.wall_time.0.to_bits());
            prefills += (f.scheduled_requests.num_prefill_requests.0 > 0) as u32;
            assert!(f.wall_time.0 > 0.0);
        }
        assert!(walls.len() > 4000, "wall_time barely varies");
        assert!(
            (500..2000).contains(&prefills),
            "prefill share {prefills}/5000"
        );
        let hb = m.heartbeat().clone();
        // A skewed copy draws the same numbers: 3x the work, twice the time for it.
        let (mut even, mut heavy) = (
            FrameModel::new("w", 1, 7),
            FrameModel::new("w", 1, 7).skewed(3.0, 2.0),
        );
        for _ in 0..200 {
            let (a, b) = (
                even.next_iteration().clone(),
                heavy.next_iteration().clone(),
            );
            let (sa, sb) = (&a.scheduled_requests, &b.scheduled_requests);
            assert_eq!(sb.sum_prefill_tokens.0, sa.sum_prefill_tokens.0 * 3);
            assert_eq!(sb.num_decode_requests.0, sa.num_decode_requests.0 * 3);
            assert!(
                b.wall_time.0 > 2.0 * a.wall_time.0
                    || sa.num_decode_requests.0 + sa.sum_prefill_tokens.0 == 0
            );
        }
        assert!(hb.is_heartbeat());
        assert_eq!((hb.worker_id.as_str(), hb.dp_rank), ("w", 3));
    }
}
