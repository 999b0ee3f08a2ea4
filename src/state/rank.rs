//! The state of one data-parallel rank: its latest frame, liveness, counters and
//! rolling statistics.

use super::fields::{self, WALL_TIME};
use super::load::LoadSample;
use super::model::ModelRing;
use super::quantiles::QuantileRing;
use super::sequence::SeqEvent;
use super::window::{FrameMoments, WindowRing};
use super::Now;
use crate::wire::ForwardPassMetrics;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Identity of a rank: (engine, worker_id, dp_rank).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RankKey {
    /// Index of the engine in the registry's engine list.
    pub engine: usize,
    /// The worker_id the rank publishes (capped in length, see [`super::labels`]).
    pub worker_id: Arc<str>,
    /// The rank's dp_rank.
    pub dp_rank: u64,
}

/// Where a rank stands, judged from what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Its latest frame was an iteration.
    Busy,
    /// Its latest frame was a heartbeat.
    Idle,
    /// Nothing arrived for longer than the stale timeout.
    Stale,
    /// Gone for longer than the expiry timeout; its series are removed.
    Expired,
}

impl Liveness {
    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Busy => "busy",
            Liveness::Idle => "idle",
            Liveness::Stale => "stale",
            Liveness::Expired => "expired",
        }
    }
}

/// Cumulative counts since the rank was first seen (Prometheus counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Frames accepted, heartbeats included.
    pub frames: u64,
    /// Heartbeat frames accepted.
    pub heartbeats: u64,
    /// Iteration frames accepted.
    pub iterations: u64,
    /// Frames lost, from gaps in the sequence.
    pub missed_frames: u64,
    /// Frames sent while no connection carried them, from forward jumps across a
    /// reconnect (a lower bound: see `proto/sequence.md`).
    pub reconnect_missed_frames: u64,
    /// Publisher restarts (the sequence fell back).
    pub publisher_restarts: u64,
    /// Repeated or out-of-order sequence numbers.
    pub duplicate_frames: u64,
    /// Sum of wall_time over iterations, in seconds.
    pub wall_time_seconds: f64,
    /// The same sum in whole nanoseconds: integer, so engine totals add ranks in any
    /// order (and move expired ones aside) without ever going down by a rounding.
    #[serde(skip)]
    pub wall_time_ns: u64,
    /// Sum of scheduled prefill requests over iterations.
    pub prefill_request_iterations: u64,
    /// Sum of prefill tokens computed.
    pub prefill_tokens: u64,
    /// Sum of prefill KV tokens read (prefix-cache hits, earlier chunks).
    pub prefill_kv_tokens: u64,
    /// Sum of scheduled decode requests over iterations.
    pub decode_request_iterations: u64,
    /// Sum of decode KV context over iterations.
    pub decode_kv_tokens: u64,
}

/// The latest iteration frame of a rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastFrame {
    /// Wall-clock receive time, Unix nanoseconds.
    pub received_at_ns: u64,
    /// The wire sequence number.
    pub sequence: u64,
    /// The frame as decoded.
    pub metrics: ForwardPassMetrics,
}

/// Mutable state of one rank, guarded by its own mutex in the registry.
#[derive(Debug)]
pub struct RankState {
    /// The rank's identity.
    pub key: RankKey,
    /// The endpoint its frames arrive on.
    pub endpoint: Arc<str>,
    /// Current liveness.
    pub liveness: Liveness,
    /// Latest iteration frame (heartbeats never overwrite it).
    pub last: Option<LastFrame>,
    /// Monotonic time of the latest frame of any kind.
    pub last_frame_at: Instant,
    /// Wall-clock time of the latest frame of any kind, Unix nanoseconds.
    pub last_frame_unix_ns: u64,
    /// Cumulative counters.
    pub counters: Counters,
    /// Set once the sweeper removed the rank: holders of a stale handle must re-register.
    pub removed: bool,
    /// The load of the latest frame of any kind (a heartbeat resets it).
    pub load: LoadSample,
    /// Per-second sums of the performance model, over the longest window.
    pub model: ModelRing,
    /// One ring per configured window, in configured order.
    windows: Vec<WindowRing>,
    quantiles: Vec<QuantileRing>,
}

/// `*dst = src.clone()` that keeps `dst`'s strings: a busy rank stores its latest
/// frame dozens of times a second, and a fresh worker_id allocation (freed by another
/// thread later) each time only churns and fragments the heap.
fn copy_frame(dst: &mut ForwardPassMetrics, src: &ForwardPassMetrics) {
    // Destructured, so that a new field cannot be forgotten here.
    let ForwardPassMetrics {
        version,
        worker_id,
        dp_rank,
        counter_id,
        timing_scope,
        wall_time,
        scheduled_requests,
        queued_requests,
    } = src;
    dst.version = *version;
    dst.worker_id.clone_from(worker_id);
    dst.dp_rank = *dp_rank;
    dst.counter_id = *counter_id;
    dst.timing_scope.clone_from(timing_scope);
    dst.wall_time = *wall_time;
    dst.scheduled_requests = *scheduled_requests;
    dst.queued_requests = *queued_requests;
}

/// A change of liveness, for logs and the event stream.
pub type Transition = (Liveness, Liveness);

impl RankState {
    /// A rank first seen at `now`, with statistics for the given windows (seconds).
    pub fn new(key: RankKey, endpoint: Arc<str>, windows: &[u64], now: &Now) -> Self {
        let longest = windows.iter().copied().max().unwrap_or(1);
        RankState {
            key,
            endpoint,
            liveness: Liveness::Idle,
            last: None,
            last_frame_at: now.instant,
            last_frame_unix_ns: now.unix_ns,
            counters: Counters::default(),
            removed: false,
            load: LoadSample::default(),
            model: ModelRing::new(longest),
            windows: windows.iter().map(|&w| WindowRing::new(w)).collect(),
            quantiles: windows.iter().map(|&w| QuantileRing::new(w)).collect(),
        }
    }

    /// Folds in one accepted frame; returns the liveness transition it caused, if any.
    pub fn apply(
        &mut self,
        metrics: &ForwardPassMetrics,
        sequence: u64,
        seq: SeqEvent,
        now: &Now,
    ) -> Option<Transition> {
        let c = &mut self.counters;
        c.frames += 1;
        match seq {
            SeqEvent::Gap { missed } => c.missed_frames = c.missed_frames.saturating_add(missed),
            SeqEvent::Unseen { frames } => {
                c.reconnect_missed_frames = c.reconnect_missed_frames.saturating_add(frames)
            }
            SeqEvent::Restart => c.publisher_restarts += 1,
            SeqEvent::Duplicate => c.duplicate_frames += 1,
            SeqEvent::First | SeqEvent::InOrder => {}
        }
        self.last_frame_at = now.instant;
        self.last_frame_unix_ns = now.unix_ns;
        self.load = LoadSample::of(metrics);
        let next = if metrics.is_heartbeat() {
            c.heartbeats += 1;
            Liveness::Idle
        } else {
            let s = &metrics.scheduled_requests;
            c.iterations += 1;
            c.wall_time_seconds += metrics.wall_time.0;
            c.wall_time_ns = c
                .wall_time_ns
                .saturating_add((metrics.wall_time.0 * 1e9).round() as u64);
            c.prefill_request_iterations = c
                .prefill_request_iterations
                .saturating_add(s.num_prefill_requests.0);
            c.prefill_tokens = c.prefill_tokens.saturating_add(s.sum_prefill_tokens.0);
            c.prefill_kv_tokens = c
                .prefill_kv_tokens
                .saturating_add(s.sum_prefill_kv_tokens.0);
            c.decode_request_iterations = c
                .decode_request_iterations
                .saturating_add(s.num_decode_requests.0);
            c.decode_kv_tokens = c.decode_kv_tokens.saturating_add(s.sum_decode_kv_tokens.0);
            let values = fields::values(metrics);
            for w in &mut self.windows {
                w.record(now.sec, &values);
            }
            self.model.record(now.sec, metrics);
            for q in &mut self.quantiles {
                q.record(now.sec, values[WALL_TIME]);
            }
            match &mut self.last {
                Some(last) => {
                    last.received_at_ns = now.unix_ns;
                    last.sequence = sequence;
                    copy_frame(&mut last.metrics, metrics);
                }
                None => {
                    self.last = Some(LastFrame {
                        received_at_ns: now.unix_ns,
                        sequence,
                        metrics: metrics.clone(),
                    })
                }
            }
            Liveness::Busy
        };
        self.transition(next)
    }

    /// Moves to `next`, returning the transition if it is one.
    pub fn transition(&mut self, next: Liveness) -> Option<Transition> {
        let prev = std::mem::replace(&mut self.liveness, next);
        (prev != next).then_some((prev, next))
    }

    /// Merges the window of `window_secs` into `out` (for rank or engine statistics).
    pub fn merge_window_into(&self, now_sec: u64, window_secs: u64, out: &mut FrameMoments) {
        // The configured window of that length; else the shortest longer one (or the
        // longest there is), so an unconfigured length still gets an answer.
        let ring = self
            .windows
            .iter()
            .find(|r| r.secs() == window_secs)
            .or_else(|| {
                self.windows
                    .iter()
                    .filter(|r| r.secs() >= window_secs)
                    .min_by_key(|r| r.secs())
            })
            .or_else(|| self.windows.iter().max_by_key(|r| r.secs()));
        if let Some(ring) = ring {
            ring.merge_into(now_sec, out);
        }
    }

    /// Heap bytes of the rolling statistics (rings, their caches, the latest frame's
    /// strings), for the memory budget's tests: nothing beyond the per-window headers
    /// until the first iteration.
    pub fn heap_bytes(&self) -> usize {
        let strings = self.last.as_ref().map_or(0, |l| {
            l.metrics.worker_id.capacity()
                + l.metrics.timing_scope.as_ref().map_or(0, String::capacity)
        });
        self.windows.capacity() * std::mem::size_of::<WindowRing>()
            + self.quantiles.capacity() * std::mem::size_of::<QuantileRing>()
            + self
                .windows
                .iter()
                .map(WindowRing::heap_bytes)
                .sum::<usize>()
            + self
                .quantiles
                .iter()
                .map(QuantileRing::heap_bytes)
                .sum::<usize>()
            + self.model.heap_bytes()
            + strings
    }

    /// Adds window `i`'s wall-time histogram into `out`.
    pub fn merge_quantiles_into(&self, now_sec: u64, i: usize, out: &mut super::quantiles::Counts) {
        self.quantiles[i].merge_into(now_sec, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Count, Real};
    use rand::{Rng, SeedableRng};

    /// Frames like a busy scheduler's: decode batches, a prefill now and then, a queue,
    /// wall_time within ±20% of 25 ms.
    struct Frames(rand::rngs::SmallRng);

    impl Frames {
        fn new(seed: u64) -> Self {
            Frames(rand::rngs::SmallRng::seed_from_u64(seed))
        }

        fn next_iteration(&mut self) -> ForwardPassMetrics {
            let r = &mut self.0;
            let mut m = ForwardPassMetrics {
                version: 1,
                worker_id: "w".into(),
                wall_time: Real(r.gen_range(0.020..0.030)),
                ..Default::default()
            };
            let s = &mut m.scheduled_requests;
            s.num_decode_requests = Count(r.gen_range(1..256));
            s.sum_decode_kv_tokens = Count(r.gen_range(1000..4_000_000));
            if r.gen_bool(0.2) {
                s.num_prefill_requests = Count(r.gen_range(1..4));
                s.sum_prefill_tokens = Count(r.gen_range(256..8192));
            }
            m.queued_requests.num_prefill_requests = Count(r.gen_range(0..8));
            m
        }

        fn heartbeat(&self) -> ForwardPassMetrics {
            ForwardPassMetrics {
                version: 1,
                worker_id: "w".into(),
                ..Default::default()
            }
        }
    }

    fn rank(now: &Now) -> RankState {
        let key = RankKey {
            engine: 0,
            worker_id: "w".into(),
            dp_rank: 0,
        };
        RankState::new(key, "ipc:///e".into(), &[10, 60], now)
    }

    fn at(start: Instant, sec: u64) -> Now {
        Now {
            instant: start,
            sec,
            unix_ns: sec * 1_000_000_000,
        }
    }

    #[test]
    fn a_heartbeat_only_rank_holds_only_its_window_headers() {
        let start = Instant::now();
        let mut r = rank(&at(start, 0));
        let empty = r.heap_bytes();
        let model = Frames::new(1);
        for sec in 0..120 {
            r.apply(&model.heartbeat(), sec, SeqEvent::InOrder, &at(start, sec));
        }
        assert_eq!(r.heap_bytes(), empty);
        assert!(empty <= 2 * 160, "{empty} bytes");
    }

    #[test]
    fn a_busy_rank_stays_within_its_budget() {
        let start = Instant::now();
        let mut r = rank(&at(start, 0));
        let mut model = Frames::new(3);
        // 20 iterations a second for 70 s: every sub-window of both windows in use.
        for sec in 0..70 {
            for _ in 0..20 {
                let m = model.next_iteration();
                r.apply(&m, sec, SeqEvent::InOrder, &at(start, sec));
            }
        }
        // Windows 6.8 KiB (10 + 5 partials), quantiles 2.7 KiB at this rate and spread,
        // model 1.25 KiB: 11 KiB, which leaves issue 13's 16 KiB per busy rank room for
        // its connection, its registry entry and the allocator's overhead.
        assert!(r.heap_bytes() <= 12 * 1024, "{} bytes", r.heap_bytes());
    }

    #[test]
    fn the_latest_frame_is_the_last_iteration_whatever_it_held_before() {
        let start = Instant::now();
        let mut r = rank(&at(start, 0));
        let mut model = Frames::new(1);
        let mut a = model.next_iteration();
        a.timing_scope = Some("engine_core".into());
        r.apply(&a, 1, SeqEvent::First, &at(start, 1));
        let mut b = model.next_iteration();
        b.worker_id = "another".into();
        b.counter_id = 9;
        r.apply(&b, 2, SeqEvent::InOrder, &at(start, 2));
        r.apply(&model.heartbeat(), 3, SeqEvent::InOrder, &at(start, 3));
        let last = r.last.as_ref().unwrap();
        assert_eq!(last.metrics, b);
        assert_eq!((last.sequence, last.received_at_ns), (2, 2_000_000_000));
    }
}
