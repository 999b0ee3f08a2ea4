//! Data-parallel balance: per engine, how unevenly each kind of work is spread over its
//! ranks and what that costs ranks that step together; per rank, its time per token
//! against the engine's other ranks (the straggler ratio). Computed at snapshot time
//! from the windows (`state::imbalance`); definitions in docs/metrics.md.

use super::text::{Family, Writer};
use crate::state::imbalance::MEASURES;
use crate::state::{EngineSnapshot, RankSnapshot};

/// Max over mean of a measure across the engine's counted ranks.
pub const RATIO: Family = Family::gauge(
    "fpm_engine_imbalance_ratio",
    "Work imbalance across the engine's live busy ranks: the heaviest rank's mean per iteration over the mean of all (1 = even, at most the rank count).",
);
/// Which rank is the heaviest.
pub const HEAVIEST: Family = Family::gauge(
    "fpm_engine_imbalance_heaviest_dp_rank",
    "dp_rank of the rank with the largest mean per iteration of the measure (the one fpm_engine_imbalance_ratio is about).",
);
/// The lock-step cost.
pub const WAIT: Family = Family::gauge(
    "fpm_engine_lockstep_wait_ratio",
    "Estimated share of rank-time spent waiting on the heaviest rank if the ranks step together (DP attention): 1 - mean/max of the executed measure.",
);
/// Ranks counted.
pub const RANKS: Family = Family::gauge(
    "fpm_engine_balance_ranks",
    "Ranks the imbalance figures count: not stale, with at least one iteration in the window (the figures need 2).",
);
/// Per rank: time per token against the engine's other ranks.
pub const STRAGGLER: Family = Family::gauge(
    "fpm_rank_straggler_ratio",
    "The rank's wall_time per scheduled token (prefill tokens + decode requests) over the median of the engine's other live busy ranks' (1 = as fast, 2 = twice as slow).",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![RATIO, HEAVIEST, WAIT, RANKS, STRAGGLER]
}

/// Writes the engine families; `labels[i]` is engine i's rendered label set.
pub fn write_engines(
    w: &mut Writer,
    engines: &[EngineSnapshot],
    labels: &[String],
    window_names: &[String],
) {
    let each = || {
        engines.iter().zip(labels).flat_map(move |(e, l)| {
            e.balance
                .iter()
                .zip(window_names)
                .map(move |(b, name)| (b, l.as_str(), name.as_str()))
        })
    };
    w.family(&RANKS);
    for (b, l, win) in each() {
        w.sample(&RANKS, l, &[("window", win)], b.ranks as f64);
    }
    for (fam, pick) in [(&RATIO, 0usize), (&HEAVIEST, 1), (&WAIT, 2)] {
        w.family(fam);
        for (b, l, win) in each() {
            for (m, slot) in MEASURES.iter().zip(&b.measures) {
                let Some(mb) = slot else { continue };
                let v = match pick {
                    0 => Some(mb.ratio),
                    1 => Some(mb.heaviest.dp_rank as f64),
                    _ => mb.lockstep_wait,
                };
                if let Some(v) = v {
                    w.sample(fam, l, &[("window", win), ("measure", m.as_str())], v);
                }
            }
        }
    }
}

/// Writes the per-rank straggler ratio (at every detail level); `labels[i]` is rank
/// i's rendered label set.
pub fn write_ranks(
    w: &mut Writer,
    ranks: &[RankSnapshot],
    labels: &[String],
    window_names: &[String],
) {
    w.family(&STRAGGLER);
    for (r, l) in ranks.iter().zip(labels) {
        for (s, win) in r.straggler.iter().zip(window_names) {
            if let Some(ratio) = s.and_then(|s| s.ratio) {
                w.sample(&STRAGGLER, l, &[("window", win)], ratio);
            }
        }
    }
}
