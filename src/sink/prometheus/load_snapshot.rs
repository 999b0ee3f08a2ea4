//! The engines' own load snapshots on `/metrics` (`load_snapshot` engines only): each
//! live rank's fields as `fpm_load_snapshot_*` (the core at every `--rank-detail`,
//! the sections at `full`), every read rank's age, and the reader's own counters.
//! A stale rank keeps only its age: its last values are not live load.

use super::text::{Family, Writer};
use crate::source::load_snapshot::reasons::{Counters, REASONS};
use crate::source::load_snapshot::LoadSnapshots;
use crate::state::detail::RankDetail;
use crate::state::load_snapshots::{unix_now, SnapshotState};
use crate::wire::load_snapshot::{Scalar, SECTIONS};
use std::sync::atomic::Ordering::Relaxed;

/// The core fields as families: (index in `CORE`, family, scale).
pub const CORE_FAMILIES: [(usize, Family, f64); 16] = [
    (0, Family::gauge("fpm_load_snapshot_timestamp_seconds", "Unix time the engine wrote the rank's latest load snapshot (LoadSnapshot.timestamp)."), 1.0),
    (2, Family::gauge("fpm_load_snapshot_num_running_reqs", "Requests running on the rank (LoadSnapshot.num_running_reqs)."), 1.0),
    (3, Family::gauge("fpm_load_snapshot_num_waiting_reqs", "Requests waiting on the rank, disaggregation queues included (num_waiting_reqs)."), 1.0),
    (4, Family::gauge("fpm_load_snapshot_num_waiting_uncached_tokens", "Estimated prompt tokens waiting for prefill compute (num_waiting_uncached_tokens)."), 1.0),
    (5, Family::gauge("fpm_load_snapshot_num_used_tokens", "KV cache tokens in use (num_used_tokens)."), 1.0),
    (6, Family::gauge("fpm_load_snapshot_num_total_tokens", "KV tokens in use plus the tokens of queued requests (num_total_tokens)."), 1.0),
    (7, Family::gauge("fpm_load_snapshot_num_active_tokens", "num_total_tokens minus tokens still awaiting a KV transfer (num_active_tokens)."), 1.0),
    (8, Family::gauge("fpm_load_snapshot_num_prealloc_ready_tokens", "Tokens of disaggregated-decode requests preallocated and ready (num_prealloc_ready_tokens)."), 1.0),
    (9, Family::gauge("fpm_load_snapshot_max_total_num_tokens", "KV cache capacity of the rank, in tokens (max_total_num_tokens)."), 1.0),
    (10, Family::gauge("fpm_load_snapshot_max_running_requests", "Most requests the rank runs at once (max_running_requests)."), 1.0),
    (11, Family::gauge("fpm_load_snapshot_token_usage_ratio", "KV cache occupancy, 0 to 1 (token_usage)."), 1.0),
    (12, Family::gauge("fpm_load_snapshot_gen_throughput_tokens_per_second", "Generation throughput the scheduler last logged (gen_throughput)."), 1.0),
    (13, Family::gauge("fpm_load_snapshot_cache_hit_rate_ratio", "Recent prefix-cache hit rate, 0 to 1 (cache_hit_rate)."), 1.0),
    (14, Family::gauge("fpm_load_snapshot_utilization_ratio", "Scheduler utilization, 0 to 1 (utilization)."), 1.0),
    (15, Family::counter("fpm_load_snapshot_prefill_uncached_tokens_total", "Prompt tokens prefilled without a cache hit since the engine started (total_prefill_uncached_tokens)."), 1.0),
    (16, Family::counter("fpm_load_snapshot_prefill_busy_seconds_total", "Time spent prefilling since the engine started (total_prefill_busy_us, in seconds)."), 1e-6),
];

/// Age of each read rank's snapshot.
pub const AGE: Family = Family::gauge(
    "fpm_load_snapshot_age_seconds",
    "Seconds since the engine wrote the rank's latest load snapshot, for live and stale ranks.",
);
/// Ranks by state.
pub const RANKS: Family = Family::gauge(
    "fpm_load_snapshot_ranks",
    "Dp ranks with a load snapshot, by state: live, stale (older than --stale-after) or pending (the writer's placeholder).",
);
/// Files by state.
pub const FILES: Family = Family::gauge(
    "fpm_load_snapshot_files",
    "Load-snapshot files found, by state: read, expired (every snapshot older than --expire-after) or rejected.",
);
/// Errors by reason.
pub const ERRORS: Family = Family::counter(
    "fpm_load_snapshot_errors_total",
    "Load-snapshot files or slots not taken, by reason.",
);
/// Reads.
pub const READS: Family = Family::counter(
    "fpm_load_snapshot_reads_total",
    "Reads of a load-snapshot file, each under one shared lock.",
);
/// Lock time.
pub const LOCK_HELD: Family = Family::counter(
    "fpm_load_snapshot_lock_held_seconds_total",
    "Time the exporter held the shared lock on load-snapshot files (writers wait for it).",
);
/// Longest hold.
pub const LOCK_HELD_MAX: Family = Family::gauge(
    "fpm_load_snapshot_lock_held_max_seconds",
    "Longest single hold of the shared lock on a load-snapshot file since the start.",
);
/// Disaggregation mode.
pub const DISAGG_MODE: Family = Family::gauge(
    "fpm_load_snapshot_disagg_mode",
    "1 for the rank's disaggregation mode (prefill, decode or null), at --rank-detail full.",
);

/// Section family names with their help, in `SECTIONS` order, numeric fields only.
pub fn section_families() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for s in &SECTIONS {
        for (name, kind) in s.fields {
            if *kind != crate::wire::load_snapshot::Kind::Str {
                v.push((
                    format!("fpm_load_snapshot_{}_{name}", s.prefix),
                    format!("LoadSnapshot.{}.{name} (--rank-detail full).", s.field),
                ));
            }
        }
    }
    v
}

/// Every fixed-name family this collector writes.
pub fn families() -> Vec<Family> {
    let mut v: Vec<Family> = CORE_FAMILIES.iter().map(|(_, f, _)| *f).collect();
    v.extend([
        AGE,
        RANKS,
        FILES,
        ERRORS,
        READS,
        LOCK_HELD,
        LOCK_HELD_MAX,
        DISAGG_MODE,
    ]);
    v
}

/// Writes the families of every engine that reads snapshots.
pub fn write(
    w: &mut Writer,
    snaps: &LoadSnapshots,
    engine_labels: &[String],
    detail: impl Fn(usize) -> RankDetail,
) {
    let now = unix_now();
    let store = &snaps.store;
    // (engine, rank labels, rank) for every read rank.
    let mut rows = Vec::new();
    for e in &snaps.engines {
        for r in store.ranks(e.engine, now) {
            let mut l = engine_labels[e.engine].clone();
            l.push_str(",dp_rank=\"");
            l.push_str(&r.dp_rank.to_string());
            l.push('"');
            rows.push((e.engine, l, r));
        }
    }
    let live = |r: &crate::state::load_snapshots::RankSnapshot| r.state == SnapshotState::Live;
    for (i, fam, scale) in &CORE_FAMILIES {
        w.family(fam);
        for (_, l, r) in rows.iter().filter(|(_, _, r)| live(r)) {
            w.sample(fam, l, &[], r.snapshot.number(*i) * scale);
        }
    }
    let full: Vec<bool> = rows
        .iter()
        .map(|(e, _, r)| live(r) && detail(*e) == RankDetail::Full)
        .collect();
    for (si, s) in SECTIONS.iter().enumerate() {
        for (fi, (name, _)) in s.fields.iter().enumerate() {
            let present = |k: usize| full[k] && rows[k].2.snapshot.sections[si].is_some();
            if s.fields[fi].1 == crate::wire::load_snapshot::Kind::Str {
                continue;
            }
            let fname = format!("fpm_load_snapshot_{}_{name}", s.prefix);
            if !(0..rows.len()).any(present) {
                continue;
            }
            let help = format!("LoadSnapshot.{}.{name} (--rank-detail full).", s.field);
            w.family_dynamic(&fname, "gauge", &help);
            for k in (0..rows.len()).filter(|k| present(*k)) {
                let values = rows[k].2.snapshot.sections[si].as_ref().expect("present");
                w.sample_dynamic(&fname, &rows[k].1, values[fi].number().unwrap_or(0.0));
            }
        }
    }
    w.family(&DISAGG_MODE);
    for (k, (_, l, r)) in rows.iter().enumerate() {
        if let (true, Some(d)) = (full[k], &r.snapshot.sections[3]) {
            if let Scalar::Str(mode) = &d[0] {
                w.sample(&DISAGG_MODE, l, &[("mode", mode)], 1.0);
            }
        }
    }
    w.family(&AGE);
    for (_, l, r) in rows
        .iter()
        .filter(|(_, _, r)| r.state != SnapshotState::Pending)
    {
        w.sample(&AGE, l, &[], r.age_secs);
    }
    w.family(&RANKS);
    for e in &snaps.engines {
        for st in [
            SnapshotState::Live,
            SnapshotState::Stale,
            SnapshotState::Pending,
        ] {
            let n = rows
                .iter()
                .filter(|(i, _, r)| *i == e.engine && r.state == st)
                .count();
            w.sample(
                &RANKS,
                &engine_labels[e.engine],
                &[("state", st.as_str())],
                n as f64,
            );
        }
    }
    w.family(&FILES);
    for e in &snaps.engines {
        let read = store.files(e.engine).len();
        let (expired, rejected) = e.aside_counts();
        for (st, n) in [("read", read), ("expired", expired), ("rejected", rejected)] {
            w.sample(&FILES, &engine_labels[e.engine], &[("state", st)], n as f64);
        }
    }
    w.family(&ERRORS);
    for e in &snaps.engines {
        for r in REASONS {
            let n = e.counters.errors(r) as f64;
            w.sample(
                &ERRORS,
                &engine_labels[e.engine],
                &[("reason", r.as_str())],
                n,
            );
        }
    }
    for (fam, get) in [
        (
            &READS,
            (|c: &Counters| c.reads.load(Relaxed) as f64) as fn(&Counters) -> f64,
        ),
        (&LOCK_HELD, |c| c.lock_held_ns.load(Relaxed) as f64 / 1e9),
        (&LOCK_HELD_MAX, |c| {
            c.lock_held_max_ns.load(Relaxed) as f64 / 1e9
        }),
    ] {
        w.family(fam);
        for e in &snaps.engines {
            w.sample(fam, &engine_labels[e.engine], &[], get(&e.counters));
        }
    }
}
