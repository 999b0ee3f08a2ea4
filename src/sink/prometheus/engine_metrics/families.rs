//! Families of several sources merged by name into one exposition.

use crate::sink::prometheus::text::{Format, Writer};
use crate::source::multiproc::exposed::{Exposed, Layout};
use crate::wire::exposition::render::{label_head, sample_labels};
use crate::wire::exposition::{FamilyType, MetricFamily, Rendered};
use std::collections::BTreeMap;

/// One source of families and the labels its samples get.
pub struct Source<'a> {
    /// Labels put in front of every sample, in order.
    pub labels: Vec<(&'a str, &'a str)>,
    /// Its families.
    pub families: Families<'a>,
}

/// A source's families: parsed from a remote worker, or a directory's merge.
pub enum Families<'a> {
    /// Owned families, with their samples' `name{labels}` per family ([`crate::wire::exposition::render::render`] of
    /// the source's labels and `families`) when kept from an earlier scrape.
    Parsed(&'a [MetricFamily], Option<&'a [Rendered]>),
    /// A directory's merge: its layout and values.
    Merged(&'a Exposed),
}

/// One family of one source, as [`write_families`] needs it.
struct Fam<'a> {
    source: usize,
    kind: FamilyType,
    help: &'a str,
    bare: bool,
    body: Body<'a>,
}

enum Body<'a> {
    Parsed(&'a MetricFamily, Option<&'a Rendered>),
    /// The directory's layout, the family's index in it, its values, samples
    /// OpenMetrics leaves out.
    Merged(&'a Layout, usize, &'a [f64], &'a [u32]),
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
    let om = w.format() == Format::OpenMetrics;
    let mut by_name: BTreeMap<&str, Vec<Fam>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        match &s.families {
            Families::Parsed(families, rendered) => {
                for (j, f) in families.iter().enumerate() {
                    by_name.entry(&f.name).or_default().push(Fam {
                        source: i,
                        kind: f.kind,
                        help: &f.help,
                        bare: f.kind == FamilyType::Counter
                            && f.samples.first().is_some_and(|s| s.name == f.name),
                        body: Body::Parsed(f, rendered.map(|r| &r[j])),
                    });
                }
            }
            Families::Merged(e) => {
                let l = &e.layout;
                for (j, f) in l.families.iter().enumerate() {
                    let name = if om { &f.om_name } else { &f.name };
                    by_name.entry(name).or_default().push(Fam {
                        source: i,
                        kind: f.kind,
                        help: &f.help,
                        bare: f.bare,
                        body: Body::Merged(l, j, e.family_values(j), &f.om_skip),
                    });
                }
            }
        }
    }
    let heads: Vec<String> = sources.iter().map(|s| label_head(&s.labels)).collect();
    let mut labels = String::new();
    // OpenMetrics has `X_created` inside family X; as a family of its own (how text
    // 0.0.4 carries it) it would clash with X, so OpenMetrics output leaves it out.
    let created_of_family = |name: &str| {
        name.strip_suffix("_created").is_some_and(|base| {
            by_name.get(base).is_some_and(|f| {
                matches!(
                    f[0].kind,
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
            for f in &fams {
                clash(f.source, name);
            }
            continue;
        }
        let first = &fams[0];
        // A text-format counter whose samples lack `_total` (legal there) keeps its
        // name; OpenMetrics cannot call it a counter.
        let (header, kind) = match (first.kind, om) {
            (FamilyType::Counter, false) if !first.bare => (format!("{name}_total"), "counter"),
            (FamilyType::Counter, true) if first.bare => (name.to_owned(), "unknown"),
            (k, om) => (name.to_owned(), k.word(om)),
        };
        w.family_dynamic(&header, kind, first.help);
        for f in &fams {
            if f.kind != first.kind {
                clash(f.source, name);
                continue;
            }
            match f.body {
                Body::Parsed(f_, rendered) => {
                    let i = f.source;
                    write_parsed(
                        w,
                        f_,
                        rendered,
                        &heads[i],
                        &sources[i].labels,
                        om,
                        &mut labels,
                    )
                }
                Body::Merged(layout, j, values, om_skip) => {
                    let head = &heads[f.source];
                    let mut skip = om_skip.iter().copied().peekable();
                    for (k, v) in values.iter().enumerate() {
                        if skip.next_if_eq(&(k as u32)).is_some() && om {
                            continue;
                        }
                        w.sample_with(|out| layout.write_prefix(out, head, j, k, om), *v);
                    }
                }
            }
        }
    }
}

/// Writes one parsed family's samples.
fn write_parsed(
    w: &mut Writer,
    f: &MetricFamily,
    rendered: Option<&Rendered>,
    head: &str,
    own: &[(&str, &str)],
    om: bool,
    labels: &mut String,
) {
    // OpenMetrics forbids _sum on a histogram with negative buckets, and _count
    // without _sum (its parsers reject the family); the text format allows both.
    let drop_sum = om
        && f.kind == FamilyType::Histogram
        && f.samples.iter().any(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "le" && v.starts_with('-'))
        });
    for (k, s) in f.samples.iter().enumerate() {
        if drop_sum && (s.name.ends_with("_sum") || s.name.ends_with("_count")) {
            continue;
        }
        match rendered {
            Some(r) => w.sample_prerendered(r.get(k), s.value),
            None => {
                sample_labels(labels, head, own, s);
                w.sample_dynamic(&s.name, labels, s.value);
            }
        }
    }
}
