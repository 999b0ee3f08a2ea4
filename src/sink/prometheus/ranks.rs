//! Per-rank series: liveness, the latest iteration's values, window statistics,
//! wall-time quantiles and cumulative counters. Labels: engine, worker_id, dp_rank
//! and the engine's configured labels. Which families a rank writes follows its
//! engine's [`RankDetail`].

use super::stats::{write_quantiles, write_window_stats};
use super::text::{Family, Writer};
use crate::state::detail::RankDetail;
use crate::state::rank::Liveness;
use crate::state::RankSnapshot;

/// 1 while the rank is not stale, 0 while stale.
pub const UP: Family = Family::gauge(
    "fpm_up",
    "1 while the rank sends frames (busy or idle), 0 once it is stale.",
);
/// One-hot liveness state.
pub const STATE: Family = Family::gauge(
    "fpm_rank_state",
    "1 for the rank's current state (busy, idle or stale), 0 for the others.",
);
/// Latest frame of any kind.
pub const LAST_FRAME: Family = Family::gauge(
    "fpm_last_frame_timestamp_seconds",
    "Unix time of the latest frame of any kind (iteration or heartbeat).",
);
/// Latest iteration frame.
pub const LAST_ITERATION: Family = Family::gauge(
    "fpm_last_iteration_timestamp_seconds",
    "Unix time of the latest iteration frame (heartbeats excluded).",
);

/// Latest iteration's fields, in [`crate::state::fields::FIELDS`] order.
pub const LAST_VALUES: [Family; 14] = [
    Family::gauge("fpm_last_wall_time_seconds", "wall_time of the latest iteration, in seconds."),
    Family::gauge("fpm_last_scheduled_prefill_requests", "scheduled_requests.num_prefill_requests of the latest iteration."),
    Family::gauge("fpm_last_scheduled_prefill_tokens", "scheduled_requests.sum_prefill_tokens of the latest iteration: prompt tokens computed."),
    Family::gauge("fpm_last_scheduled_prefill_length_variance", "scheduled_requests.var_prefill_length of the latest iteration: population variance of prompt lengths."),
    Family::gauge("fpm_last_scheduled_prefill_kv_tokens", "scheduled_requests.sum_prefill_kv_tokens of the latest iteration: KV tokens read, not computed."),
    Family::gauge("fpm_last_scheduled_decode_requests", "scheduled_requests.num_decode_requests of the latest iteration."),
    Family::gauge("fpm_last_scheduled_decode_kv_tokens", "scheduled_requests.sum_decode_kv_tokens of the latest iteration: KV context of decoding requests."),
    Family::gauge("fpm_last_scheduled_decode_kv_tokens_variance", "scheduled_requests.var_decode_kv_tokens of the latest iteration."),
    Family::gauge("fpm_last_queued_prefill_requests", "queued_requests.num_prefill_requests after the latest iteration."),
    Family::gauge("fpm_last_queued_prefill_tokens", "queued_requests.sum_prefill_tokens after the latest iteration."),
    Family::gauge("fpm_last_queued_prefill_length_variance", "queued_requests.var_prefill_length after the latest iteration."),
    Family::gauge("fpm_last_queued_decode_requests", "queued_requests.num_decode_requests after the latest iteration."),
    Family::gauge("fpm_last_queued_decode_kv_tokens", "queued_requests.sum_decode_kv_tokens after the latest iteration."),
    Family::gauge("fpm_last_queued_decode_kv_tokens_variance", "queued_requests.var_decode_kv_tokens after the latest iteration."),
];

/// Iterations in each window.
pub const WINDOW_ITERATIONS: Family = Family::gauge(
    "fpm_window_iterations",
    "Iterations (heartbeats excluded) in the sliding window.",
);
/// Window mean.
pub const WINDOW_MEAN: Family = Family::gauge(
    "fpm_window_mean",
    "Mean of the field over the iterations in the sliding window (field in its wire unit).",
);
/// Window variance.
pub const WINDOW_VARIANCE: Family = Family::gauge(
    "fpm_window_variance",
    "Population variance (Welford) of the field over the sliding window.",
);
/// Window minimum.
pub const WINDOW_MIN: Family = Family::gauge(
    "fpm_window_min",
    "Minimum of the field over the sliding window.",
);
/// Window maximum.
pub const WINDOW_MAX: Family = Family::gauge(
    "fpm_window_max",
    "Maximum of the field over the sliding window.",
);
/// wall_time quantiles.
pub const WALL_TIME_QUANTILE: Family = Family::summary("fpm_wall_time_window_seconds", "Iteration wall_time: quantiles over the sliding window (hdrhistogram buckets, 1% precision; quantile 1 is the max); _sum and _count are cumulative since the rank was first seen, as in client libraries' summaries.");

/// Cumulative counters, each with how to read it from [`crate::state::rank::Counters`].
pub const COUNTERS: [Family; 13] = [
    Family::counter(
        "fpm_frames_total",
        "Frames accepted from the rank, heartbeats included.",
    ),
    Family::counter(
        "fpm_heartbeats_total",
        "Heartbeat frames accepted from the rank.",
    ),
    Family::counter(
        "fpm_iterations_total",
        "Iteration frames accepted from the rank.",
    ),
    Family::counter(
        "fpm_missed_frames_total",
        "Frames lost in transit or by the publisher, from gaps in the sequence numbers.",
    ),
    Family::counter(
        "fpm_reconnect_missed_frames_total",
        "Frames the publisher sent while no connection carried them: forward jumps of the sequence across a reconnect (at least this many).",
    ),
    Family::counter(
        "fpm_publisher_restarts_total",
        "Times the publisher's sequence fell back: the engine restarted.",
    ),
    Family::counter(
        "fpm_duplicate_frames_total",
        "Frames with a repeated or out-of-order sequence number.",
    ),
    Family::counter(
        "fpm_wall_time_seconds_total",
        "Sum of iteration wall_time, in seconds (rate() gives busy fraction).",
    ),
    Family::counter(
        "fpm_prefill_request_iterations_total",
        "Sum of scheduled prefill requests over iterations (chunked prefill counts each chunk).",
    ),
    Family::counter(
        "fpm_prefill_tokens_total",
        "Prompt tokens computed (sum of scheduled sum_prefill_tokens).",
    ),
    Family::counter(
        "fpm_prefill_kv_tokens_total",
        "KV tokens read but not computed (sum of scheduled sum_prefill_kv_tokens).",
    ),
    Family::counter(
        "fpm_decode_request_iterations_total",
        "Sum of scheduled decode requests over iterations: decode tokens generated.",
    ),
    Family::counter(
        "fpm_decode_kv_tokens_total",
        "Sum of decode KV context over iterations.",
    ),
];

fn counter_values(r: &RankSnapshot) -> [f64; 13] {
    let c = &r.counters;
    [
        c.frames as f64,
        c.heartbeats as f64,
        c.iterations as f64,
        c.missed_frames as f64,
        c.reconnect_missed_frames as f64,
        c.publisher_restarts as f64,
        c.duplicate_frames as f64,
        c.wall_time_seconds,
        c.prefill_request_iterations as f64,
        c.prefill_tokens as f64,
        c.prefill_kv_tokens as f64,
        c.decode_request_iterations as f64,
        c.decode_kv_tokens as f64,
    ]
}

/// Every family this collector writes (for docs and tests).
pub fn families() -> Vec<Family> {
    let mut v = vec![UP, STATE, LAST_FRAME, LAST_ITERATION];
    v.extend(LAST_VALUES);
    v.extend([
        WINDOW_ITERATIONS,
        WINDOW_MEAN,
        WINDOW_VARIANCE,
        WINDOW_MIN,
        WINDOW_MAX,
        WALL_TIME_QUANTILE,
    ]);
    v.extend(COUNTERS);
    v
}

/// Writes the per-rank families; `labels[i]` is rank i's rendered label set and
/// `details[i]` its level.
pub fn write(
    w: &mut Writer,
    ranks: &[RankSnapshot],
    labels: &[String],
    details: &[RankDetail],
    window_names: &[String],
) {
    let both = || ranks.iter().zip(labels);
    w.family(&UP);
    for (r, l) in both() {
        w.sample(&UP, l, &[], (r.liveness != Liveness::Stale) as u8 as f64);
    }
    w.family(&STATE);
    for (r, l) in both() {
        for s in [Liveness::Busy, Liveness::Idle, Liveness::Stale] {
            w.sample(
                &STATE,
                l,
                &[("state", s.as_str())],
                (r.liveness == s) as u8 as f64,
            );
        }
    }
    w.family(&LAST_FRAME);
    for (r, l) in both() {
        w.sample(&LAST_FRAME, l, &[], r.last_frame_unix_ns as f64 / 1e9);
    }
    w.family(&LAST_ITERATION);
    for (r, l) in both() {
        if let Some(last) = &r.last {
            w.sample(&LAST_ITERATION, l, &[], last.received_at_ns as f64 / 1e9);
        }
    }
    for (i, fam) in LAST_VALUES.iter().enumerate() {
        w.family(fam);
        for (r, l) in both() {
            if let Some(last) = &r.last {
                w.sample(fam, l, &[], crate::state::fields::values(&last.metrics)[i]);
            }
        }
    }
    w.family(&WINDOW_ITERATIONS);
    for (r, l) in both() {
        for (win, name) in r.windows.iter().zip(window_names) {
            w.sample(
                &WINDOW_ITERATIONS,
                l,
                &[("window", name)],
                win.moments.count as f64,
            );
        }
    }
    write_window_stats(
        w,
        both()
            .zip(details)
            .map(|((r, l), d)| (r.windows.as_slice(), l.as_str(), *d)),
        window_names,
        [&WINDOW_MEAN, &WINDOW_VARIANCE, &WINDOW_MIN, &WINDOW_MAX],
    );
    w.family(&WALL_TIME_QUANTILE);
    for (r, l) in both() {
        for (win, name) in r.windows.iter().zip(window_names) {
            let totals = (r.counters.wall_time_seconds, r.counters.iterations);
            write_quantiles(w, &WALL_TIME_QUANTILE, l, name, win, totals);
        }
    }
    for (i, fam) in COUNTERS.iter().enumerate() {
        w.family(fam);
        for (r, l) in both() {
            w.sample(fam, l, &[], counter_values(r)[i]);
        }
    }
}
