//! Per-engine aggregates: rank counts by state and the all-ranks merge of the window
//! statistics (Welford partials combined with the parallel formula, histograms added).
//! Labels: engine and the engine's configured labels.

use super::stats::{write_quantiles, write_window_stats};
use super::text::{Family, Writer};
use crate::state::detail::RankDetail;
use crate::state::EngineSnapshot;

/// Ranks per state.
pub const RANKS: Family = Family::gauge(
    "fpm_engine_ranks",
    "Ranks of the engine currently in each state (busy, idle, stale).",
);
/// Expired ranks.
pub const EXPIRED: Family = Family::counter(
    "fpm_engine_ranks_expired_total",
    "Ranks of the engine that expired (silent past the expiry timeout) and were removed.",
);
/// Iterations per window, all ranks.
pub const ITERATIONS: Family = Family::gauge(
    "fpm_engine_window_iterations",
    "Iterations of all the engine's ranks in the sliding window.",
);
/// Mean over all ranks.
pub const MEAN: Family = Family::gauge(
    "fpm_engine_window_mean",
    "Mean of the field over all the engine's iterations in the sliding window.",
);
/// Variance over all ranks.
pub const VARIANCE: Family = Family::gauge(
    "fpm_engine_window_variance",
    "Population variance of the field over all the engine's iterations in the sliding window.",
);
/// Min over all ranks.
pub const MIN: Family = Family::gauge(
    "fpm_engine_window_min",
    "Minimum of the field over all the engine's iterations in the sliding window.",
);
/// Max over all ranks.
pub const MAX: Family = Family::gauge(
    "fpm_engine_window_max",
    "Maximum of the field over all the engine's iterations in the sliding window.",
);
/// wall_time quantiles over all ranks.
pub const QUANTILE: Family = Family::summary("fpm_engine_wall_time_window_seconds", "Iteration wall_time of all the engine's ranks: quantiles over the sliding window; _sum and _count are cumulative since the exporter started, expired ranks included.");

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        RANKS, EXPIRED, ITERATIONS, MEAN, VARIANCE, MIN, MAX, QUANTILE,
    ]
}

/// Writes the engine families; `labels[i]` is engine i's rendered label set.
pub fn write(
    w: &mut Writer,
    engines: &[EngineSnapshot],
    labels: &[String],
    window_names: &[String],
) {
    let both = || engines.iter().zip(labels);
    w.family(&RANKS);
    for (e, l) in both() {
        for (state, n) in [("busy", e.busy), ("idle", e.idle), ("stale", e.stale)] {
            w.sample(&RANKS, l, &[("state", state)], n as f64);
        }
    }
    w.family(&EXPIRED);
    for (e, l) in both() {
        w.sample(&EXPIRED, l, &[], e.expired_total as f64);
    }
    w.family(&ITERATIONS);
    for (e, l) in both() {
        for (win, name) in e.windows.iter().zip(window_names) {
            w.sample(
                &ITERATIONS,
                l,
                &[("window", name)],
                win.moments.count as f64,
            );
        }
    }
    write_window_stats(
        w,
        both().map(|(e, l)| (e.windows.as_slice(), l.as_str(), RankDetail::Full)),
        window_names,
        [&MEAN, &VARIANCE, &MIN, &MAX],
    );
    w.family(&QUANTILE);
    for (e, l) in both() {
        for (win, name) in e.windows.iter().zip(window_names) {
            let totals = (e.wall_time_ns_total as f64 / 1e9, e.iterations_total);
            write_quantiles(w, &QUANTILE, l, name, win, totals);
        }
    }
}
