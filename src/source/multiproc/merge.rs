//! The merge rules of `MultiProcessCollector._accumulate_metrics` (prometheus_client
//! 0.26.0 `multiprocess.py`), over keys parsed once and interned between scrapes ([`super::keys`]).
//!
//! Files are visited in directory order and entries in file order, as Python's glob
//! and loop visit them, so sums add in the same order and come out bit-identical.
//! A family's type is that of the first file holding it, a gauge's mode that of the
//! last gauge file holding it; gauge files add a `pid` label, which every mode but
//! `all`/`liveall` drops again.

use super::exposed::{Exposed, Layout};
use super::file::{Kind, Mode};
pub use super::keys::Keys;
use super::keys::SUFFIXES;
use super::plan::{target, FastMap, FileSig, Plan, Slot, Target, U64Hasher};
use crate::wire::exposition::{go_float_string, FamilyType, MetricFamily, Sample};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

/// One file's contribution to a scrape.
pub struct FileData {
    /// Its kind.
    pub kind: Kind,
    /// Its gauge mode.
    pub mode: Option<Mode>,
    /// Its pid id ([`Keys::pid`]).
    pub pid: u32,
    /// Its entries' (key id, value, timestamp) in the scrape's value list, in file order.
    pub range: Range<usize>,
    /// Whether its entries were (re)parsed by this scrape's read.
    pub fresh: bool,
    /// What identifies its entries between scrapes.
    pub sig: FileSig,
}

/// One merge's result.
pub struct Merged {
    /// Families sorted by name, samples sorted by labels, as kept for rendering.
    pub exposed: Arc<Exposed>,
    /// The same as owned families, when the merge was asked for them.
    pub families: Option<Arc<Vec<MetricFamily>>>,
    /// Equal for merges with the same families, labels and sample order.
    pub generation: u64,
    /// Samples left out (see [`merge`]).
    pub dropped: u64,
}

/// One merged sample before it is placed: sorted by (label group ordinal, rank, le).
pub(super) struct Row {
    pub(super) family: u32,
    /// The bucket or series group with its pid (group << 32 | pid).
    pub(super) group: u64,
    /// The group's place in (family name, labels) order; equal label sets share one.
    ord: u32,
    rank: u8,
    pub(super) le: f64,
    pub(super) value: f64,
    pub(super) slot: Slot,
    /// Index in [`super::keys::SUFFIXES`].
    pub(super) suffix: u8,
}

/// Merges the files of one scrape (their entries in `values`) into families sorted by
/// name, samples sorted by labels, and counts the samples left out because their name
/// does not fit their family's type (or a histogram `le` that is not a number).
/// A scrape with the same files and entries as the last one runs the compiled
/// program (`Plan::steady`), unless `want_families` asks for owned families (built
/// by a full merge). `own` are the directory's labels, which sample labels of the same
/// name give way to.
pub fn merge(
    keys: &Keys,
    files: &[FileData],
    values: &[(u32, f64, f64)],
    plan: &mut Plan,
    want_families: bool,
    own: &[(&str, &str)],
) -> Merged {
    if !want_families {
        if let Some((exposed, generation, dropped)) = plan.steady(files, values) {
            return Merged {
                exposed,
                families: None,
                generation,
                dropped,
            };
        }
    }
    let nf = keys.families.len();
    let mut ftype: Vec<Option<Kind>> = vec![None; nf];
    let mut fmode: Vec<Option<Mode>> = vec![None; nf];
    // Python's `Metric(name, help_text, typ)` is made at a family's first entry read.
    let mut fhelp: Vec<u32> = vec![u32::MAX; nf];
    for f in files {
        let mut last = u32::MAX;
        for &(key, _, _) in &values[f.range.clone()] {
            let fam = keys.family_of(key);
            if fam == last {
                continue;
            }
            last = fam;
            let i = fam as usize;
            if ftype[i].is_none() {
                ftype[i] = Some(f.kind);
                fhelp[i] = keys.help_id(key);
            }
            if f.kind == Kind::Gauge {
                fmode[i] = f.mode;
            }
        }
    }
    let mut dropped = 0u64;
    plan.accs.clear();
    plan.buckets.clear();
    let (accs, buckets) = (&mut plan.accs, &mut plan.buckets);
    for f in files {
        for &(key, v, ts) in &values[f.range.clone()] {
            match target(keys, &ftype, &fmode, f, key) {
                Target::Drop => dropped += 1,
                Target::Bucket(k, le) => {
                    let b = buckets.entry(k).or_default();
                    match b.iter_mut().find(|(l, _)| *l == le) {
                        Some((_, s)) => *s += v,
                        None => b.push((le, v)),
                    }
                }
                Target::Acc(k, op) => accs.entry(k).or_default().add(op, v, ts),
            }
        }
    }
    let mut rows: Vec<Row> = Vec::with_capacity(accs.len() + buckets.len() * 16);
    for (&k, acc) in accs.iter() {
        if !acc.present {
            continue;
        }
        let (sid, pid) = ((k >> 32) as usize, k & 0xffff_ffff);
        let s = &keys.series[sid];
        let fam = &keys.families[s.family as usize];
        let t = family_type(ftype[s.family as usize].unwrap_or(Kind::Gauge));
        if !t.allows_sample(&fam.name, &keys.sample_name(s)) {
            dropped += 1;
            continue;
        }
        let suffix = keys.suffix(s);
        let group = (s.group as u64) << 32 | pid;
        if t == FamilyType::Histogram
            && suffix == "_count"
            && buckets.get(&group).is_some_and(|b| !b.is_empty())
        {
            continue; // replaced by the cumulative total, as in Python
        }
        rows.push(Row {
            family: s.family,
            group,
            ord: 0,
            rank: match suffix {
                "_count" => 1,
                "_sum" => 2,
                _ => 0,
            },
            le: 0.0,
            value: acc.value,
            slot: Slot::Acc(k),
            suffix: keys.suffix_index(s),
        });
    }
    for (&k, b) in buckets.iter_mut() {
        if b.is_empty() {
            continue;
        }
        let family = keys.group_family((k >> 32) as u32);
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut total = 0.0;
        for (i, &(le, v)) in b.iter().enumerate() {
            total += v;
            let slot = Slot::Bucket(k, i as u32);
            rows.push(Row {
                family,
                group: k,
                ord: 0,
                rank: 0,
                le,
                value: total,
                slot,
                suffix: 2,
            });
        }
        let slot = Slot::Count(k);
        rows.push(Row {
            family,
            group: k,
            ord: 0,
            rank: 1,
            le: 0.0,
            value: total,
            slot,
            suffix: 3,
        });
    }
    // Label sets are compared once per distinct group, not once per row comparison:
    // each group gets its ordinal in (family name, labels) order, equal sets equal ones.
    let mut groups: Vec<(u64, Vec<(String, String)>)> = rows
        .iter()
        .map(|r| r.group)
        .collect::<std::collections::HashSet<u64, BuildHasherDefault<U64Hasher>>>()
        .into_iter()
        .map(|k| (k, keys.group_labels(k)))
        .collect();
    let family_name = |k: u64| &keys.families[keys.group_family((k >> 32) as u32) as usize].name;
    groups.sort_unstable_by(|a, b| (family_name(a.0), &a.1).cmp(&(family_name(b.0), &b.1)));
    let mut ordinal: FastMap<u64, u32> = FastMap::default();
    let mut n = 0u32;
    for (i, (k, labels)) in groups.iter().enumerate() {
        if i > 0 && (family_name(groups[i - 1].0), &groups[i - 1].1) != (family_name(*k), labels) {
            n += 1;
        }
        ordinal.insert(*k, n);
    }
    drop(groups);
    for r in &mut rows {
        r.ord = ordinal[&r.group];
    }
    drop(ordinal);
    rows.sort_by(|a, b| {
        (a.ord, a.rank)
            .cmp(&(b.ord, b.rank))
            .then(a.le.total_cmp(&b.le))
    });
    let mut sig = (
        plan.signature_keys.0.build_hasher(),
        plan.signature_keys.1.build_hasher(),
    );
    for r in &rows {
        let row = (
            r.family,
            ftype[r.family as usize].map(|k| k as u8),
            fhelp[r.family as usize],
            slot_key(r.slot),
            r.le.to_bits(),
        );
        row.hash(&mut sig.0);
        row.hash(&mut sig.1);
    }
    let signature = (sig.0.finish(), sig.1.finish());
    let kind = |f: u32| family_type(ftype[f as usize].unwrap_or(Kind::Gauge));
    let help = |f: u32| keys.help(fhelp[f as usize]);
    let (generation, layout) = match plan.same_series(signature) {
        Some((g, layout)) => (Some(g), layout),
        None => (
            None,
            Arc::new(Layout::build(keys, &rows, (&kind, &help), own)),
        ),
    };
    let exposed = Arc::new(Exposed {
        layout,
        values: rows.iter().map(|r| r.value).collect(),
    });
    let families = want_families.then(|| Arc::new(owned(keys, &rows, &kind, &help)));
    let slots: Vec<Slot> = rows.iter().map(|r| r.slot).collect();
    drop(rows);
    let generation = plan.keep(
        keys,
        files,
        values,
        (&ftype, &fmode),
        &exposed,
        &slots,
        dropped,
        signature,
        generation,
    );
    Merged {
        exposed,
        families,
        generation,
        dropped,
    }
}

/// The sorted rows as owned families (for the `/v1/engines` view).
fn owned<'k>(
    keys: &'k Keys,
    rows: &[Row],
    kind: &dyn Fn(u32) -> FamilyType,
    help: &dyn Fn(u32) -> &'k str,
) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = Vec::new();
    for r in rows {
        let info = &keys.families[r.family as usize];
        if out.last().is_none_or(|f| f.name != info.name) {
            out.push(MetricFamily {
                name: info.name.clone(),
                kind: kind(r.family),
                help: help(r.family).to_owned(),
                samples: Vec::new(),
            });
        }
        let name = format!("{}{}", info.name, SUFFIXES[r.suffix as usize]);
        let labels = match r.slot {
            Slot::Acc(k) => keys.series_labels(k),
            Slot::Bucket(..) => {
                let mut l = keys.group_labels(r.group);
                l.push(("le".into(), go_float_string(r.le)));
                l
            }
            Slot::Count(_) => keys.group_labels(r.group),
        };
        out.last_mut().expect("pushed").samples.push(Sample {
            name,
            labels,
            value: r.value,
        });
    }
    out
}

/// A slot as plain numbers, for the row signature.
fn slot_key(s: Slot) -> (u8, u64, u32) {
    match s {
        Slot::Acc(k) => (0, k, 0),
        Slot::Bucket(k, i) => (1, k, i),
        Slot::Count(k) => (2, k, 0),
    }
}

fn family_type(k: Kind) -> FamilyType {
    match k {
        Kind::Counter => FamilyType::Counter,
        Kind::Gauge => FamilyType::Gauge,
        Kind::Histogram => FamilyType::Histogram,
        Kind::Summary => FamilyType::Summary,
    }
}
