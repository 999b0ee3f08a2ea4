//! Re-exposes metric families read from outside (the engines' multiprocess
//! directories) with the exporter's labels in front, and the reader's own counters.
//!
//! Every sample gets the source's labels (`engine` and the engine's configured
//! labels) first; a sample label of the same name is kept as `exported_<name>`, as
//! Prometheus itself renames clashing target labels. A family name seen in several
//! sources is written once; a later source whose family of that name has another
//! type is left out of that family and counted as `family_clash`.

use super::text::{escape_label_value, push_label, Family, Format, Writer};
use crate::source::exposition::{FamilyType, MetricFamily};
use crate::source::multiproc::{EngineMetrics, MultiprocDir, Reason};
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

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![ERRORS, FILES]
}

/// One source of families and the labels its samples get.
pub struct Source<'a> {
    /// Labels put in front of every sample, in order.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Its families.
    pub families: &'a [MetricFamily],
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
    let mut by_name: BTreeMap<&str, Vec<(usize, &MetricFamily)>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        for f in s.families {
            by_name.entry(&f.name).or_default().push((i, f));
        }
    }
    let prefixes: Vec<String> = sources
        .iter()
        .map(|s| {
            let mut l = String::new();
            for (k, v) in &s.labels {
                push_label(&mut l, k, v);
            }
            l
        })
        .collect();
    let om = w.format() == Format::OpenMetrics;
    let mut labels = String::new();
    for (name, fams) in by_name {
        if skip(name) {
            for (i, _) in &fams {
                clash(*i, name);
            }
            continue;
        }
        let first = fams[0].1;
        let header = match (first.kind, om) {
            (FamilyType::Counter, false) => format!("{name}_total"),
            _ => name.to_owned(),
        };
        w.family_dynamic(&header, first.kind.as_str(), &first.help);
        for (i, f) in fams {
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
            for s in &f.samples {
                if drop_sum && (s.name.ends_with("_sum") || s.name.ends_with("_count")) {
                    continue;
                }
                labels.clear();
                labels.push_str(&prefixes[i]);
                for (k, v) in &s.labels {
                    if !labels.is_empty() {
                        labels.push(',');
                    }
                    if own.iter().any(|(o, _)| o == k) {
                        labels.push_str("exported_");
                    }
                    labels.push_str(k);
                    labels.push_str("=\"");
                    escape_label_value(&mut labels, v);
                    labels.push('"');
                }
                w.sample_dynamic(&s.name, &labels, s.value);
            }
        }
    }
}

/// The labels of a directory's samples: `engine`, then the engine's labels.
pub fn dir_labels(d: &MultiprocDir) -> Vec<(&str, &str)> {
    let mut l = vec![("engine", d.engine.as_str())];
    l.extend(d.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    l
}

/// Reads every directory and writes its families (`skip` as in [`write_families`]).
pub fn write_engines(w: &mut Writer, em: &EngineMetrics, skip: &dyn Fn(&str) -> bool) {
    let collected = em.collect();
    let sources: Vec<Source> = collected
        .iter()
        .map(|(d, f)| Source {
            labels: dir_labels(d),
            families: f,
        })
        .collect();
    write_families(w, &sources, skip, &mut |i, name| {
        collected[i].0.count(Reason::FamilyClash, name, 1)
    });
    drop(sources);
    drop(collected);
    release_freed_memory();
}

/// Hands the merge's freed memory back to the OS: a big directory's scrape frees tens
/// of MB of short-lived samples, which glibc would otherwise keep in the arena of
/// whichever blocking-pool thread ran it (the RSS growth fpm-bench's multiproc measures).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
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
