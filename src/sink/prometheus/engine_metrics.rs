//! Re-exposes metric families read from outside (the engines' multiprocess
//! directories) with the exporter's labels in front, and the reader's own counters.
//!
//! Every sample gets the source's labels (`engine` and the engine's configured
//! labels) first; a sample label of the same name is kept as `exported_<name>`, as
//! Prometheus itself renames clashing target labels. A family name seen in several
//! sources is written once; a later source whose family of that name has another
//! type is left out of that family and counted as `family_clash`.

use super::text::{escape_label_value, push_label, Family, Format, Writer};
use crate::source::exposition::{FamilyType, MetricFamily, Rendered, Sample};
use crate::source::multiproc::{EngineMetrics, MultiprocDir, Reason};
use crate::source::scrape::{ScrapeError, Workers};
use std::collections::BTreeMap;

/// Files or samples skipped.
pub const ERRORS: Family = Family::counter(
    "fpm_multiproc_errors_total",
    "Parts of an engine's multiprocess metrics directory skipped, by reason (the file, or for bad_sample and family_clash the samples or family, is left out).",
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
    "Failed scrapes of an engine worker's metrics by reason (connect, timeout, http_status, body_limit, parse), and samples (duplicate_sample) or families (family_clash) left out.",
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

/// One source of families and the labels its samples get.
pub struct Source<'a> {
    /// Labels put in front of every sample, in order.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Its families.
    pub families: &'a [MetricFamily],
    /// Its samples' `name{labels}` per family ([`render`] of `labels` and
    /// `families`), when kept from an earlier scrape.
    pub rendered: Option<&'a [Rendered]>,
}

/// Each sample's `name{labels}` with `own` labels in front, per family.
pub fn render(own: &[(&str, &str)], families: &[MetricFamily]) -> Vec<Rendered> {
    let head = label_head(own);
    let mut labels = String::new();
    families
        .iter()
        .map(|f| {
            let mut r = Rendered {
                text: String::new(),
                ends: Vec::with_capacity(f.samples.len()),
            };
            for s in &f.samples {
                sample_labels(&mut labels, &head, own, s);
                r.text.push_str(&s.name);
                if !labels.is_empty() {
                    r.text.push('{');
                    r.text.push_str(&labels);
                    r.text.push('}');
                }
                r.ends.push(r.text.len() as u32);
            }
            r.text.shrink_to_fit();
            r
        })
        .collect()
}

fn label_head(own: &[(&str, &str)]) -> String {
    let mut l = String::new();
    for (k, v) in own {
        push_label(&mut l, k, v);
    }
    l
}

/// A sample's labels: `head` (the source's), then its own, renamed `exported_<name>`
/// where they clash with the source's.
fn sample_labels(out: &mut String, head: &str, own: &[(&str, &str)], s: &Sample) {
    out.clear();
    out.push_str(head);
    for (k, v) in &s.labels {
        if !out.is_empty() {
            out.push(',');
        }
        if own.iter().any(|(o, _)| o == k) {
            out.push_str("exported_");
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
}

/// Writes the families of `sources`, merged by name. `skip(name)` leaves a family
/// out (a name the exposition already has); `clash(i, name)` is told of every family
/// of source `i` left out.
pub fn write_families(
    w: &mut Writer,
    sources: &[Source],
    skip: &dyn Fn(&str) -> bool,
    clash: &mut dyn FnMut(usize, &str),
) {
    let mut by_name: BTreeMap<&str, Vec<(usize, usize, &MetricFamily)>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        for (j, f) in s.families.iter().enumerate() {
            by_name.entry(&f.name).or_default().push((i, j, f));
        }
    }
    let heads: Vec<String> = sources.iter().map(|s| label_head(&s.labels)).collect();
    let om = w.format() == Format::OpenMetrics;
    let mut labels = String::new();
    // OpenMetrics has `X_created` inside family X; as a family of its own (how text
    // 0.0.4 carries it) it would clash with X, so OpenMetrics output leaves it out.
    let created_of_family = |name: &str| {
        name.strip_suffix("_created").is_some_and(|base| {
            by_name.get(base).is_some_and(|f| {
                matches!(
                    f[0].2.kind,
                    FamilyType::Counter | FamilyType::Histogram | FamilyType::Summary
                )
            })
        })
    };
    let created: Vec<&str> = if om {
        by_name
            .keys()
            .copied()
            .filter(|n| created_of_family(n))
            .collect()
    } else {
        Vec::new()
    };
    for (name, fams) in by_name {
        if created.contains(&name) {
            continue;
        }
        if skip(name) {
            for (i, _, _) in &fams {
                clash(*i, name);
            }
            continue;
        }
        let first = fams[0].2;
        // A text-format counter whose samples lack `_total` (legal there) keeps its
        // name; OpenMetrics cannot call it a counter.
        let bare = first.kind == FamilyType::Counter
            && first.samples.first().is_some_and(|s| s.name == first.name);
        let (header, kind) = match (first.kind, om) {
            (FamilyType::Counter, false) if !bare => (format!("{name}_total"), "counter"),
            (FamilyType::Counter, true) if bare => (name.to_owned(), "unknown"),
            (k, om) => (name.to_owned(), k.word(om)),
        };
        w.family_dynamic(&header, kind, &first.help);
        for (i, j, f) in fams {
            if f.kind != first.kind {
                clash(i, name);
                continue;
            }
            let own = &sources[i].labels;
            // OpenMetrics forbids _sum on a histogram with negative buckets, and _count
            // without _sum (its parsers reject the family); the text format allows both.
            let drop_sum = om
                && f.kind == FamilyType::Histogram
                && f.samples.iter().any(|s| {
                    s.labels
                        .iter()
                        .any(|(k, v)| k == "le" && v.starts_with('-'))
                });
            let rendered = sources[i].rendered.map(|r| &r[j]);
            for (k, s) in f.samples.iter().enumerate() {
                if drop_sum && (s.name.ends_with("_sum") || s.name.ends_with("_count")) {
                    continue;
                }
                match rendered {
                    Some(r) => w.sample_prerendered(r.get(k), s.value),
                    None => {
                        sample_labels(&mut labels, &heads[i], own, s);
                        w.sample_dynamic(&s.name, &labels, s.value);
                    }
                }
            }
        }
    }
}

/// The labels of a directory's samples: `engine`, then the engine's labels.
pub fn dir_labels(d: &MultiprocDir) -> Vec<(&str, &str)> {
    let mut l = vec![("engine", d.engine.as_str())];
    l.extend(d.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    l.push(("worker_addr", d.worker_addr.as_str()));
    l
}

/// Reads every directory, takes every remote worker's latest scrape from its cache,
/// and writes their families merged by name (`skip` as in [`write_families`]).
pub fn write_engines(
    w: &mut Writer,
    em: Option<&EngineMetrics>,
    workers: Option<&Workers>,
    skip: &dyn Fn(&str) -> bool,
) {
    map_large_buffers();
    let collected = em.map(|em| em.collect()).unwrap_or_default();
    let rendered: Vec<_> = collected
        .iter()
        .map(|(d, f, g)| d.rendered(*g, || render(&dir_labels(d), f)))
        .collect();
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
        .zip(&rendered)
        .map(|((d, f, _), r)| Source {
            labels: dir_labels(d),
            families: f.as_slice(),
            rendered: Some(r.as_slice()),
        })
        .collect();
    sources.extend(remote.iter().map(|(t, s, r)| Source {
        labels: t.own_labels(),
        families: s.families.as_slice(),
        rendered: Some(r.as_slice()),
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
    release_freed_memory();
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

/// Hands the merge's freed memory back to the OS: a big directory's scrape frees tens
/// of MB of short-lived samples, which glibc would otherwise keep in the arena of
/// whichever blocking-pool thread ran it (the RSS growth fpm-bench's multiproc measures).
#[allow(unsafe_code)] // libc call, see SAFETY below
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pins glibc's mmap threshold at 1 MiB: by default it rises to the size of the
/// largest block freed (up to 32 MiB), after which each scrape's multi-MB exposition
/// buffer comes from, and stays in, a thread's heap instead of being unmapped on free.
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes an allocator setting; it takes no pointers.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        });
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
            for (k, v) in dir_labels(d) {
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
