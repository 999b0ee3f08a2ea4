//! Re-exposes metric families read from outside (the engines' multiprocess
//! directories) with the exporter's labels in front, and the reader's own counters.
//!
//! Every sample gets the source's labels (`engine` and the engine's configured
//! labels) first; a sample label of the same name is kept as `exported_<name>`, as
//! Prometheus itself renames clashing target labels. A family name seen in several
//! sources is written once, under the first source's type; a later source whose
//! family of that name has another type keeps its samples in it and is counted as
//! `family_clash`.

use super::text::{push_label, Family, Writer};
use crate::alloc;
use crate::source::multiproc::{EngineMetrics, Reason};
use crate::source::scrape::{ScrapeError, Workers};

mod families;
pub use families::{write_families, Families, Source};

/// Files or samples skipped.
pub const ERRORS: Family = Family::counter(
    "fpm_multiproc_errors_total",
    "Parts of an engine's multiprocess metrics directory skipped, by reason (the file, or for bad_sample the samples, is left out; family_clash: a family written under another engine's type, or left out of /metrics where the exporter has its name).",
);
/// Files merged.
pub const FILES: Family = Family::gauge(
    "fpm_multiproc_files",
    "Files of the engine's multiprocess metrics directory merged by the latest read.",
);

/// Whether the latest scrape of a remote worker succeeded.
pub const SCRAPE_UP: Family = Family::gauge(
    "fpm_engine_scrape_up",
    "1 if the latest scrape of the engine worker's metrics (--scrape) succeeded, else 0 (its series are then absent from /engine_metrics).",
);
/// Duration of the latest scrape.
pub const SCRAPE_DURATION: Family = Family::gauge(
    "fpm_engine_scrape_duration_seconds",
    "Duration of the latest scrape of the engine worker's metrics: request, body and parse.",
);
/// Samples of the latest scrape.
pub const SCRAPE_SAMPLES: Family = Family::gauge(
    "fpm_engine_scrape_samples",
    "Samples kept from the latest scrape of the engine worker's metrics (0 when it failed).",
);
/// Failed scrapes and dropped samples.
pub const SCRAPE_ERRORS: Family = Family::counter(
    "fpm_engine_scrape_errors_total",
    "Failed scrapes of an engine worker's metrics by reason (connect, timeout, http_status, body_limit, parse), samples left out (duplicate_sample), and families written under another source's type (family_clash, samples kept).",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        ERRORS,
        FILES,
        SCRAPE_UP,
        SCRAPE_DURATION,
        SCRAPE_SAMPLES,
        SCRAPE_ERRORS,
    ]
}

/// Reads every directory, takes every remote worker's latest scrape from its cache,
/// and writes their families merged by name (`skip` as in [`write_families`]).
pub fn write_engines(
    w: &mut Writer,
    em: Option<&EngineMetrics>,
    workers: Option<&Workers>,
    skip: &dyn Fn(&str) -> bool,
) {
    alloc::map_large_buffers();
    let collected = em.map(|em| em.collect()).unwrap_or_default();
    let remote: Vec<_> = workers
        .map(|ws| {
            ws.targets
                .iter()
                .filter_map(|t| t.latest().map(|(s, r)| (t, s, r)))
                .collect()
        })
        .unwrap_or_default();
    let mut sources: Vec<Source> = collected
        .iter()
        .map(|(d, e)| Source {
            labels: d.own_labels(),
            families: Families::Merged(e),
        })
        .collect();
    sources.extend(remote.iter().map(|(t, s, r)| Source {
        labels: t.own_labels(),
        families: Families::Parsed(s.families.as_slice(), Some(r.as_slice())),
    }));
    let dirs = collected.len();
    write_families(w, &sources, skip, &mut |i, name| {
        if i < dirs {
            collected[i].0.count(Reason::FamilyClash, name, 1)
        } else {
            remote[i - dirs].0.count(ScrapeError::FamilyClash, 1)
        }
    });
    drop(sources);
    drop(remote);
    drop(collected);
    alloc::release_freed_memory();
}

/// Writes every remote worker's health: up, duration, samples, errors by reason
/// (zeros included, for `rate()`).
pub fn write_scrape_stats(w: &mut Writer, workers: &Workers) {
    let labels: Vec<String> = workers
        .targets
        .iter()
        .map(|t| {
            let mut l = String::new();
            for (k, v) in t.own_labels() {
                push_label(&mut l, k, v);
            }
            l
        })
        .collect();
    let health: Vec<_> = workers.targets.iter().map(|t| t.health()).collect();
    w.family(&SCRAPE_UP);
    for (h, l) in health.iter().zip(&labels) {
        w.sample(&SCRAPE_UP, l, &[], if h.up { 1.0 } else { 0.0 });
    }
    w.family(&SCRAPE_DURATION);
    for (h, l) in health.iter().zip(&labels) {
        w.sample(&SCRAPE_DURATION, l, &[], h.duration_seconds);
    }
    w.family(&SCRAPE_SAMPLES);
    for (h, l) in health.iter().zip(&labels) {
        w.sample(&SCRAPE_SAMPLES, l, &[], h.samples as f64);
    }
    w.family(&SCRAPE_ERRORS);
    for (t, l) in workers.targets.iter().zip(&labels) {
        for r in ScrapeError::ALL {
            w.sample(
                &SCRAPE_ERRORS,
                l,
                &[("reason", r.as_str())],
                t.errors(r) as f64,
            );
        }
    }
}

/// Writes the reader's counters: errors by reason (zeros included, for `rate()`) and
/// files merged, per engine.
pub fn write_stats(w: &mut Writer, em: &EngineMetrics) {
    let labels: Vec<String> = em
        .dirs
        .iter()
        .map(|d| {
            let mut l = String::new();
            for (k, v) in d.own_labels() {
                push_label(&mut l, k, v);
            }
            l
        })
        .collect();
    w.family(&ERRORS);
    for (d, l) in em.dirs.iter().zip(&labels) {
        for r in Reason::ALL {
            w.sample(&ERRORS, l, &[("reason", r.as_str())], d.errors(r) as f64);
        }
    }
    w.family(&FILES);
    for (d, l) in em.dirs.iter().zip(&labels) {
        w.sample(&FILES, l, &[], d.files() as f64);
    }
}
