//! What a directory's merge keeps between scrapes for `/engine_metrics`: per family
//! its header facts, per sample which label group, name suffix and `le` it has, and
//! a flat value slot. A sample's `name{labels}` is written at render time from its
//! group's label text, rendered once per group (the buckets, `_count` and `_sum` of
//! a histogram share one): keeping every sample's rendered line instead cost 12 MB
//! for a 64-process SGLang directory, a third of the exporter's memory for it. No
//! owned `MetricFamily`/`Sample` per series is kept either (~800 bytes a sample);
//! they are built only for a caller that asks ([`super::MultiprocDir::collect`]).

use super::keys::{Keys, SUFFIXES};
use super::merge::Row;
use super::plan::{FastMap, Slot};
use crate::wire::exposition::render::escape_label_value;
use crate::wire::exposition::render::exported_names;
use crate::wire::exposition::{go_float_string, FamilyType};
use std::collections::HashMap;
use std::sync::Arc;

/// One merged family's header facts.
#[derive(Debug, Clone)]
pub struct ExposedFamily {
    /// The family name.
    pub name: String,
    /// Its name in OpenMetrics: prometheus_client 0.26 names OpenMetrics samples with
    /// each `:` as `_` (`sglang_x_total`); the family header is named the same here
    /// (Python keeps `sglang:x` there, so its own parser leaves those samples untyped).
    pub om_name: String,
    /// Its type.
    pub kind: FamilyType,
    /// Its help text.
    pub help: String,
    /// A counter whose samples lack `_total` (legal in text 0.0.4).
    pub bare: bool,
    /// Samples OpenMetrics output leaves out (sorted, family-relative): the `_sum` and
    /// `_count` of a histogram with a negative bucket, which OpenMetrics parsers reject.
    pub om_skip: Vec<u32>,
}

/// No `le` label.
pub const NO_LE: u32 = u32::MAX;

/// Where one sample's `name{labels}` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRef {
    /// Its label group ([`Layout::groups`]).
    pub group: u32,
    /// Its `le` label ([`Layout::les`]) or [`NO_LE`].
    pub le: u32,
    /// Its name's suffix after the family name (`SUFFIXES`).
    pub suffix: u8,
}

/// The part of a merge that only changes when the series set does.
#[derive(Debug, Default)]
pub struct Layout {
    /// Families sorted by name.
    pub families: Vec<ExposedFamily>,
    /// Where each family's samples start in [`Layout::samples`] (and the values); one
    /// more entry than families.
    pub starts: Vec<u32>,
    /// Every sample, family after family.
    pub samples: Vec<SampleRef>,
    /// Each group's labels rendered and escaped, each as `,name="value"` (names that
    /// clash with the directory's labels renamed `exported_<name>`), and the offset
    /// where a sorted `le` goes.
    pub groups: Vec<(Box<str>, u32)>,
    /// Distinct `le` label values, escaped.
    pub les: Vec<Box<str>>,
    /// The `le` label's name: `exported_le` when the directory's labels have an `le`.
    pub le_name: &'static str,
}

/// One scrape's merged families: the layout shared across scrapes, fresh values.
#[derive(Debug, Clone, Default)]
pub struct Exposed {
    /// Shared while the series stay the same.
    pub layout: Arc<Layout>,
    /// Every sample's value, in [`Layout::samples`] order.
    pub values: Vec<f64>,
}

impl Exposed {
    /// Nothing merged.
    pub fn empty() -> Self {
        Exposed::default()
    }

    /// Samples in all families.
    pub fn samples(&self) -> usize {
        self.values.len()
    }

    /// Family `f`'s values.
    pub fn family_values(&self, f: usize) -> &[f64] {
        let s = &self.layout.starts;
        &self.values[s[f] as usize..s[f + 1] as usize]
    }
}

impl Layout {
    /// Appends sample `i` (family-relative) of family `f`'s `name{labels}`, with `head`
    /// (the directory's labels rendered, `k="v",...`) first; `om`: its OpenMetrics name.
    #[inline]
    pub fn write_prefix(&self, out: &mut String, head: &str, f: usize, i: usize, om: bool) {
        let s = self.samples[self.starts[f] as usize + i];
        let fam = &self.families[f];
        out.push_str(if om { &fam.om_name } else { &fam.name });
        out.push_str(SUFFIXES[s.suffix as usize]);
        let (text, at) = &self.groups[s.group as usize];
        let at = *at as usize;
        let open = out.len();
        out.push('{');
        out.push_str(head);
        let le = |out: &mut String| {
            if s.le != NO_LE {
                out.push(',');
                out.push_str(self.le_name);
                out.push_str("=\"");
                out.push_str(&self.les[s.le as usize]);
                out.push('"');
            }
        };
        // Python's writers sort every sample's labels, a bucket's `le` included.
        out.push_str(&text[..at]);
        le(out);
        out.push_str(&text[at..]);
        if out.len() == open + 1 {
            out.pop(); // no labels at all: no braces
        } else {
            if head.is_empty() {
                out.remove(open + 1); // the first label's comma
            }
            out.push('}');
        }
    }

    /// Sample `i` of family `f`'s `name{labels}` as a string (tests, diagnostics).
    pub fn prefix(&self, head: &str, f: usize, i: usize) -> String {
        let mut s = String::new();
        self.write_prefix(&mut s, head, f, i, false);
        s
    }

    /// Samples of family `f`.
    pub fn family_len(&self, f: usize) -> usize {
        (self.starts[f + 1] - self.starts[f]) as usize
    }
}

impl Layout {
    /// The layout of a full merge's sorted rows, with each family's type and help;
    /// `own` are the directory's labels (a sample label of the same name is renamed
    /// `exported_<name>`).
    pub(super) fn build<'k>(
        keys: &'k Keys,
        rows: &[Row],
        (kind, help): (&dyn Fn(u32) -> FamilyType, &dyn Fn(u32) -> &'k str),
        own: &[(&str, &str)],
    ) -> Layout {
        let clash = |k: &str| own.iter().any(|(o, _)| *o == k);
        let mut l = Layout {
            le_name: if clash("le") { "exported_le" } else { "le" },
            samples: Vec::with_capacity(rows.len()),
            ..Layout::default()
        };
        let mut group_ids: FastMap<u64, u32> = FastMap::default();
        let mut le_ids: HashMap<String, u32> = HashMap::new();
        // The current family's `_sum`/`_count` samples, and whether it has a negative bucket.
        let (mut sum_count, mut negative) = (Vec::new(), false);
        let finish = |l: &mut Layout, sum_count: &mut Vec<u32>, negative: &mut bool| {
            if let Some(f) = l.families.last_mut() {
                f.om_skip = if *negative {
                    std::mem::take(sum_count)
                } else {
                    Vec::new()
                };
            }
            sum_count.clear();
            *negative = false;
        };
        for r in rows {
            let info = &keys.families[r.family as usize];
            let k = kind(r.family);
            if l.families.last().is_none_or(|f| f.name != info.name) {
                finish(&mut l, &mut sum_count, &mut negative);
                l.starts.push(l.samples.len() as u32);
                l.families.push(ExposedFamily {
                    name: info.name.clone(),
                    om_name: info.name.replace(':', "_"),
                    kind: k,
                    help: help(r.family).to_owned(),
                    bare: k == FamilyType::Counter && r.suffix == 0,
                    om_skip: Vec::new(),
                });
            }
            let group = *group_ids.entry(r.group).or_insert_with(|| {
                l.groups.push(group_text(
                    &keys.group_labels(r.group),
                    keys.group_le_at(r.group),
                    own,
                ));
                l.groups.len() as u32 - 1
            });
            let le = match r.slot {
                Slot::Acc(k) => keys.series_le(k).map(str::to_owned),
                Slot::Bucket(..) => Some(go_float_string(r.le)),
                Slot::Count(_) => None,
            };
            negative |=
                k == FamilyType::Histogram && le.as_ref().is_some_and(|v| v.starts_with('-'));
            let suffix = SUFFIXES[r.suffix as usize];
            let at = l.samples.len() as u32 - l.starts.last().expect("pushed");
            // Every suffix is longer than `_sum`: the full name ends as it does, or as
            // the family name when it has none.
            let end = if suffix.is_empty() {
                info.name.as_str()
            } else {
                suffix
            };
            if end.ends_with("_sum") || end.ends_with("_count") {
                sum_count.push(at);
            }
            let le = le.map_or(NO_LE, |v| {
                *le_ids.entry(v).or_insert_with_key(|v| {
                    let mut e = String::new();
                    escape_label_value(&mut e, v);
                    l.les.push(e.into());
                    l.les.len() as u32 - 1
                })
            });
            l.samples.push(SampleRef {
                group,
                le,
                suffix: r.suffix,
            });
        }
        finish(&mut l, &mut sum_count, &mut negative);
        l.starts.push(l.samples.len() as u32);
        l
    }
}

/// A group's labels as `,name="value"...` and where a sorted `le` (label `before_le`
/// in Python's order) goes among them. A label named like one of the directory's own
/// is prefixed with `exported_` until the name is free, as Prometheus renames them
/// ([`exported_names`]): a sample carrying `engine` and `exported_engine` keeps both.
fn group_text(
    labels: &[(String, String)],
    before_le: usize,
    own: &[(&str, &str)],
) -> (Box<str>, u32) {
    let names = exported_names(own, labels);
    let mut text = String::new();
    let mut le_at = 0;
    for (i, ((_, v), k)) in labels.iter().zip(&names).enumerate() {
        if i == before_le {
            le_at = text.len();
        }
        text.push(',');
        text.push_str(k);
        text.push_str("=\"");
        escape_label_value(&mut text, v);
        text.push('"');
    }
    if before_le == labels.len() {
        le_at = text.len();
    }
    (text.into(), le_at as u32)
}
