//! What a directory's merge keeps between scrapes for `/engine_metrics`: per family
//! its header facts, per sample its pre-rendered `name{labels}` (one text per family)
//! and a flat value slot. No owned `MetricFamily`/`Sample` per series is kept (those
//! cost ~800 bytes a sample, most of the exporter's memory for a big directory); they
//! are built only for a caller that asks ([`super::MultiprocDir::collect`]).

use crate::wire::exposition::{FamilyType, MetricFamily, Rendered};
use std::sync::Arc;

/// One merged family's header facts.
#[derive(Debug, Clone)]
pub struct ExposedFamily {
    /// The family name.
    pub name: String,
    /// Its type.
    pub kind: FamilyType,
    /// Its help text.
    pub help: String,
    /// A counter whose samples lack `_total` (legal in text 0.0.4).
    pub bare: bool,
    /// Samples OpenMetrics output leaves out (sorted): the `_sum` and `_count` of a
    /// histogram with a negative bucket, which OpenMetrics parsers reject.
    pub om_skip: Vec<u32>,
}

/// The part of a merge that only changes when the series set does.
#[derive(Debug)]
pub struct Layout {
    /// Families sorted by name.
    pub families: Vec<ExposedFamily>,
    /// Each family's samples' `name{labels}`, the directory's labels in front.
    pub prefixes: Vec<Rendered>,
}

/// One scrape's merged families: the layout shared across scrapes, fresh values.
#[derive(Debug, Clone)]
pub struct Exposed {
    /// Shared while the series stay the same.
    pub layout: Arc<Layout>,
    /// Values per family, in sample order.
    pub values: Vec<Vec<f64>>,
}

impl Exposed {
    /// Nothing merged.
    pub fn empty() -> Self {
        Exposed {
            layout: Arc::new(Layout {
                families: Vec::new(),
                prefixes: Vec::new(),
            }),
            values: Vec::new(),
        }
    }

    /// Samples in all families.
    pub fn samples(&self) -> usize {
        self.values.iter().map(Vec::len).sum()
    }
}

impl Layout {
    /// The header facts of `families`, with `prefixes` rendered from them.
    pub fn of(families: &[MetricFamily], prefixes: Vec<Rendered>) -> Self {
        let families = families
            .iter()
            .map(|f| {
                let neg_le = f.kind == FamilyType::Histogram
                    && f.samples.iter().any(|s| {
                        s.labels
                            .iter()
                            .any(|(k, v)| k == "le" && v.starts_with('-'))
                    });
                let om_skip = if neg_le {
                    (0..f.samples.len() as u32)
                        .filter(|&i| {
                            let n = &f.samples[i as usize].name;
                            n.ends_with("_sum") || n.ends_with("_count")
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                ExposedFamily {
                    name: f.name.clone(),
                    kind: f.kind,
                    help: f.help.clone(),
                    bare: f.kind == FamilyType::Counter
                        && f.samples.first().is_some_and(|s| s.name == f.name),
                    om_skip,
                }
            })
            .collect();
        Layout { families, prefixes }
    }
}
