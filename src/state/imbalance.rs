//! Data-parallel balance of an engine, read from its ranks' windows at snapshot time:
//! how unevenly the work is spread (and what that costs when the ranks step together),
//! and which rank is slow for the work it does. Definitions and the reasons for each
//! choice: docs/metrics.md, "Imbalance and stragglers".
//!
//! Nothing here runs per frame: the windows already hold each rank's mean work per
//! iteration and mean wall_time, so a snapshot adds O(ranks × windows) arithmetic and
//! one small sort per engine and window.

use super::fields::{FIELDS, WALL_TIME};
use super::rank::{Liveness, RankKey};
use super::snapshot::{EngineSnapshot, RankSnapshot};
use super::window::FrameMoments;
use std::sync::Arc;

/// A kind of work a rank carries into an iteration, as FPM reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `scheduled_requests.sum_prefill_tokens`: prompt tokens computed.
    PrefillTokens,
    /// `scheduled_requests.num_decode_requests`: tokens decoded.
    DecodeRequests,
    /// `scheduled_requests.sum_decode_kv_tokens`: KV context the decodes read.
    DecodeKvTokens,
    /// `queued_requests.num_prefill_requests + num_decode_requests`: requests waiting.
    QueuedRequests,
}

/// Every measure, in output order.
pub const MEASURES: [Measure; 4] = [
    Measure::PrefillTokens,
    Measure::DecodeRequests,
    Measure::DecodeKvTokens,
    Measure::QueuedRequests,
];

/// Index of a field in [`FIELDS`] by its wire path (resolved at compile time).
const fn field(path: &str) -> usize {
    let mut i = 0;
    while i < FIELDS.len() {
        if const_eq(FIELDS[i].path, path) {
            return i;
        }
        i += 1;
    }
    panic!("no such field");
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const PREFILL_TOKENS: usize = field("scheduled_requests.sum_prefill_tokens");
const DECODE_REQUESTS: usize = field("scheduled_requests.num_decode_requests");
const DECODE_KV_TOKENS: usize = field("scheduled_requests.sum_decode_kv_tokens");
const QUEUED_PREFILL: usize = field("queued_requests.num_prefill_requests");
const QUEUED_DECODE: usize = field("queued_requests.num_decode_requests");

impl Measure {
    /// The `measure` label value and JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::PrefillTokens => "prefill_tokens",
            Measure::DecodeRequests => "decode_requests",
            Measure::DecodeKvTokens => "decode_kv_tokens",
            Measure::QueuedRequests => "queued_requests",
        }
    }

    /// Whether the measure is work an iteration executes (so lock-step ranks wait on
    /// it); queued requests are not executed, so they have no lock-step cost.
    pub fn executed(self) -> bool {
        self != Measure::QueuedRequests
    }

    /// The measure's mean per iteration over a window's moments (0 when empty).
    pub fn mean(self, m: &FrameMoments) -> f64 {
        let mean = |i: usize| m.summary(i).mean;
        match self {
            Measure::PrefillTokens => mean(PREFILL_TOKENS),
            Measure::DecodeRequests => mean(DECODE_REQUESTS),
            Measure::DecodeKvTokens => mean(DECODE_KV_TOKENS),
            Measure::QueuedRequests => mean(QUEUED_PREFILL) + mean(QUEUED_DECODE),
        }
    }
}

/// Scheduled tokens per iteration, the straggler's unit of work: prompt tokens
/// computed plus one token per decoding request.
pub fn tokens_per_iteration(m: &FrameMoments) -> f64 {
    m.summary(PREFILL_TOKENS).mean + m.summary(DECODE_REQUESTS).mean
}

/// The rank that carries the most of one measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Heaviest {
    /// Its worker_id.
    pub worker_id: Arc<str>,
    /// Its dp_rank.
    pub dp_rank: u64,
}

/// How unevenly one measure is spread over an engine's counted ranks in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureBalance {
    /// Mean per iteration of the heaviest rank divided by the mean over the counted
    /// ranks of their means per iteration: 1 when even, at most the rank count.
    pub ratio: f64,
    /// The mean over the counted ranks of their means per iteration.
    pub mean: f64,
    /// The heaviest rank's mean per iteration.
    pub max: f64,
    /// The rank with the largest mean per iteration (the lowest key on a tie).
    pub heaviest: Heaviest,
    /// For executed work, `1 - mean / max`: the share of rank-time spent waiting on
    /// the heaviest rank if the ranks step together and an iteration's time follows
    /// this measure; `None` for queued requests.
    pub lockstep_wait: Option<f64>,
}

/// One engine's balance over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Balance {
    /// Ranks counted: not stale, with at least one iteration in the window.
    pub ranks: u64,
    /// Per measure in [`MEASURES`] order; `None` with fewer than two counted ranks or
    /// when no counted rank did any of that work.
    pub measures: [Option<MeasureBalance>; 4],
}

/// One rank's speed for its work over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straggler {
    /// Mean wall_time over mean scheduled tokens per iteration, seconds per token.
    pub seconds_per_token: f64,
    /// `seconds_per_token` over the median of the engine's other counted ranks'; `None`
    /// when no other rank of the engine has a time per token.
    pub ratio: Option<f64>,
}

/// Whether a rank's window counts for its engine's balance: the rank is not stale
/// (its window would describe a past it no longer runs in) and ran an iteration.
fn counted(r: &RankSnapshot, window: usize) -> bool {
    !matches!(r.liveness, Liveness::Stale | Liveness::Expired)
        && r.windows[window].moments.count > 0
}

/// The balance of one engine's ranks (`ranks`, all of one engine) over window `w`.
pub fn balance(ranks: &[RankSnapshot], w: usize) -> Balance {
    let counted: Vec<&RankSnapshot> = ranks.iter().filter(|r| counted(r, w)).collect();
    let mut out = Balance {
        ranks: counted.len() as u64,
        ..Balance::default()
    };
    if counted.len() < 2 {
        return out;
    }
    for (slot, measure) in out.measures.iter_mut().zip(MEASURES) {
        let mut sum = 0.0;
        let mut heaviest: Option<(&RankKey, f64)> = None;
        for r in &counted {
            let v = measure.mean(&r.windows[w].moments);
            sum += v;
            // Strictly greater: on a tie the first (lowest key) stays.
            if heaviest.is_none_or(|(_, max)| v > max) {
                heaviest = Some((&r.key, v));
            }
        }
        let mean = sum / counted.len() as f64;
        let Some((key, max)) = heaviest else { continue };
        if mean <= 0.0 {
            continue;
        }
        *slot = Some(MeasureBalance {
            ratio: max / mean,
            mean,
            max,
            heaviest: Heaviest {
                worker_id: key.worker_id.clone(),
                dp_rank: key.dp_rank,
            },
            lockstep_wait: measure.executed().then(|| 1.0 - mean / max),
        });
    }
    out
}

/// Each rank's time per token over window `w` against the median of the engine's
/// other ranks (`ranks`, all of one engine), in `ranks` order.
pub fn stragglers(ranks: &[RankSnapshot], w: usize) -> Vec<Option<Straggler>> {
    let spt: Vec<Option<f64>> = ranks
        .iter()
        .map(|r| {
            if !counted(r, w) {
                return None;
            }
            let m = &r.windows[w].moments;
            let tokens = tokens_per_iteration(m);
            (tokens > 0.0).then(|| m.summary(WALL_TIME).mean / tokens)
        })
        .collect();
    let mut sorted: Vec<f64> = spt.iter().flatten().copied().collect();
    sorted.sort_unstable_by(f64::total_cmp);
    spt.iter()
        .map(|s| {
            let s = (*s)?;
            let ratio = median_without(&sorted, s)
                .filter(|&m| m > 0.0)
                .map(|m| s / m);
            Some(Straggler {
                seconds_per_token: s,
                ratio,
            })
        })
        .collect()
}

/// The median of `sorted` with one occurrence of `x` (which it holds) left out; `None`
/// when nothing is left.
fn median_without(sorted: &[f64], x: f64) -> Option<f64> {
    let n = sorted.len().checked_sub(1).filter(|&n| n > 0)?;
    let skip = sorted.partition_point(|&v| v < x);
    let at = |j: usize| sorted[if j < skip { j } else { j + 1 }];
    Some(if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    })
}

/// Fills every engine's balance and every rank's straggler figures, for each window.
/// `ranks` are sorted by key (so an engine's ranks are contiguous) and `engines[i]` is
/// engine i.
pub fn fill(ranks: &mut [RankSnapshot], engines: &mut [EngineSnapshot]) {
    let mut start = 0;
    while start < ranks.len() {
        let engine = ranks[start].key.engine;
        let end = start + ranks[start..].partition_point(|r| r.key.engine == engine);
        let group = &mut ranks[start..end];
        let nwin = group[0].windows.len();
        for w in 0..nwin {
            if let Some(e) = engines.get_mut(engine) {
                e.balance[w] = balance(group, w);
            }
            let figures = stragglers(group, w);
            for (r, s) in group.iter_mut().zip(figures) {
                r.straggler[w] = s;
            }
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_without_leaves_one_occurrence_out() {
        assert_eq!(median_without(&[1.0], 1.0), None);
        assert_eq!(median_without(&[1.0, 2.0], 1.0), Some(2.0));
        assert_eq!(median_without(&[1.0, 2.0], 2.0), Some(1.0));
        assert_eq!(median_without(&[1.0, 1.0, 1.0, 2.0], 2.0), Some(1.0));
        assert_eq!(median_without(&[1.0, 1.0, 1.0, 2.0], 1.0), Some(1.0));
        assert_eq!(median_without(&[1.0, 3.0, 5.0, 7.0], 1.0), Some(5.0));
        assert_eq!(median_without(&[1.0, 3.0, 5.0, 7.0], 5.0), Some(3.0));
        assert_eq!(median_without(&[1.0, 3.0, 5.0], 3.0), Some(3.0));
        assert_eq!(median_without(&[2.0, 2.0, 2.0], 2.0), Some(2.0));
    }

    #[test]
    fn measure_fields_are_the_wire_fields_they_name() {
        assert_eq!(FIELDS[PREFILL_TOKENS].name, "sum_prefill_tokens");
        assert_eq!(FIELDS[DECODE_REQUESTS].name, "num_decode_requests");
        assert_eq!(FIELDS[DECODE_KV_TOKENS].name, "sum_decode_kv_tokens");
        assert_eq!(
            FIELDS[QUEUED_PREFILL].path,
            "queued_requests.num_prefill_requests"
        );
        assert_eq!(
            FIELDS[QUEUED_DECODE].path,
            "queued_requests.num_decode_requests"
        );
    }
}
