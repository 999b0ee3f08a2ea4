//! Families of several sources merged by name into one exposition.

use crate::sink::prometheus::text::{Format, Writer};
use crate::source::multiproc::exposed::{Exposed, Layout};
use crate::wire::exposition::render::{label_head, sample_labels};
use crate::wire::exposition::{FamilyType, MetricFamily, Rendered, Sample};
use std::collections::{BTreeMap, HashMap, HashSet};

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
/// of source `i` left out, and of every family of source `i` written under another
/// source's type (its samples kept).
pub fn write_families(
    w: &mut Writer,
    sources: &[Source],
    skip: &dyn Fn(&str) -> bool,
    clash: &mut dyn FnMut(usize, &str),
) {
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
                    by_name.entry(&f.name).or_default().push(Fam {
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
    let om = w.format() == Format::OpenMetrics;
    let mut labels = String::new();
    let mut named: HashSet<String> = HashSet::new();
    // OpenMetrics has `X_created` inside family X; as a family of its own (how text
    // 0.0.4 carries it) it would clash with X, so OpenMetrics output writes each
    // `X_created` sample inside X, after the samples of its label set.
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
    let mut created_of: HashMap<(usize, &str), Created> = HashMap::new();
    for n in &created {
        for f in &by_name[n] {
            if let Body::Parsed(mf, r) = f.body {
                created_of.insert((f.source, &n[..n.len() - "_created".len()]), (mf, r));
            }
        }
    }
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
        // A text parser (promtool's) fails on a second TYPE line of a name, or one
        // after samples of that name: such a header is left out, its samples stay.
        if named.insert(header.clone()) {
            w.family_dynamic(&header, kind, first.help);
        }
        for f in &fams {
            if f.kind != first.kind {
                // Typed otherwise by another source: its samples go under this
                // header all the same (Prometheus stores a sample whatever the TYPE
                // line says); counted, as the family's type is the first source's.
                clash(f.source, name);
                loose_names(f, &header, &mut named);
            }
            match f.body {
                Body::Parsed(f_, rendered) => {
                    let i = f.source;
                    let own = Own {
                        head: &heads[i],
                        labels: &sources[i].labels,
                    };
                    let created = created_of.remove(&(i, name));
                    write_parsed(w, f_, rendered, &own, om, &mut labels, created);
                }
                Body::Merged(layout, j, values, om_skip) => {
                    let head = &heads[f.source];
                    let mut skip = om_skip.iter().copied().peekable();
                    for (k, v) in values.iter().enumerate() {
                        if skip.next_if_eq(&(k as u32)).is_some() && om {
                            continue;
                        }
                        w.sample_with(|out| layout.write_prefix(out, head, j, k), *v);
                    }
                }
            }
        }
        // `X_created` of a source whose X is not here (or not parsed): kept all the same.
        let rest: Vec<usize> = created_of
            .keys()
            .filter(|(_, base)| *base == name)
            .map(|(i, _)| *i)
            .collect();
        for i in rest {
            let (mf, r) = created_of.remove(&(i, name)).expect("listed");
            let own = Own {
                head: &heads[i],
                labels: &sources[i].labels,
            };
            for k in 0..mf.samples.len() {
                put(w, mf, r, k, &own, &mut labels);
            }
        }
    }
}

/// A source's `X_created` family and its rendered samples.
type Created<'a> = (&'a MetricFamily, Option<&'a Rendered>);

/// The labels a source puts in front: rendered once, and as pairs.
struct Own<'a> {
    head: &'a str,
    labels: &'a [(&'a str, &'a str)],
}

/// Writes sample `k` of `f`.
fn put(
    w: &mut Writer,
    f: &MetricFamily,
    rendered: Option<&Rendered>,
    k: usize,
    own: &Own,
    labels: &mut String,
) {
    let s = &f.samples[k];
    match rendered {
        Some(r) => w.sample_prerendered(r.get(k), s.value),
        None => {
            sample_labels(labels, own.head, own.labels, s);
            w.sample_dynamic(&s.name, labels, s.value);
        }
    }
}

/// A sample's label set without `le` and `quantile`: what its `_created` carries.
fn label_set(s: &Sample) -> Vec<(&str, &str)> {
    s.labels
        .iter()
        .filter(|(k, _)| k != "le" && k != "quantile")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Records the names of `f`'s samples written under another family's `header`: a
/// text parser makes each a family of its own.
fn loose_names(f: &Fam, header: &str, named: &mut HashSet<String>) {
    match f.body {
        Body::Parsed(mf, _) => {
            for s in &mf.samples {
                if s.name != header && !named.contains(&s.name) {
                    named.insert(s.name.clone());
                }
            }
        }
        Body::Merged(layout, j, ..) => {
            let name = &layout.families[j].name;
            for suffix in ["", "_total", "_bucket", "_count", "_sum"] {
                let n = format!("{name}{suffix}");
                if n != header {
                    named.insert(n);
                }
            }
        }
    }
}

/// Writes one parsed family's samples, each `X_created` sample of `created` after the
/// samples of its label set (OpenMetrics groups a metric's samples).
fn write_parsed(
    w: &mut Writer,
    f: &MetricFamily,
    rendered: Option<&Rendered>,
    own: &Own,
    om: bool,
    labels: &mut String,
    created: Option<Created>,
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
    let mut pending: HashMap<Vec<(&str, &str)>, usize> = created
        .map(|(c, _)| {
            c.samples
                .iter()
                .enumerate()
                .map(|(k, s)| (label_set(s), k))
                .collect()
        })
        .unwrap_or_default();
    for (k, s) in f.samples.iter().enumerate() {
        if !(drop_sum && (s.name.ends_with("_sum") || s.name.ends_with("_count"))) {
            put(w, f, rendered, k, own, labels);
        }
        if let Some((c, r)) = created.filter(|_| !pending.is_empty()) {
            let set = label_set(s);
            let last = f.samples.get(k + 1).is_none_or(|n| label_set(n) != set);
            if let Some(ci) = last.then(|| pending.remove(&set)).flatten() {
                put(w, c, r, ci, own, labels);
            }
        }
    }
    if let Some((c, r)) = created {
        let mut rest: Vec<usize> = pending.into_values().collect();
        rest.sort_unstable();
        for ci in rest {
            put(w, c, r, ci, own, labels);
        }
    }
}
