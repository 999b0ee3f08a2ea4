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
use super::plan::{FastMap, Plan, Slot, U64Hasher};
use crate::wire::exposition::{go_float_string, FamilyType, MetricFamily, Rendered, Sample};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// One file's contribution to a scrape.
pub struct FileData {
    /// Its kind.
    pub kind: Kind,
    /// Its gauge mode.
    pub mode: Option<Mode>,
    /// Its pid id ([`Keys::pid`]).
    pub pid: u32,
    /// (key id, value, timestamp) per entry, in file order.
    pub values: Vec<(u32, f64, f64)>,
    /// Distinct family ids in the file, in first-seen order.
    pub families: Vec<u32>,
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

/// Merges the files of one scrape into families sorted by name, samples sorted by
/// labels, and counts the samples left out because their name
/// does not fit their family's type (or a histogram `le` that is not a number).
/// A scrape with the same series as the last one only refreshes `plan`'s values,
/// unless `want_families` asks for owned families (built by a full merge). `render`
/// gives each sample's `name{labels}` and runs only when the series set changed.
pub fn merge(
    keys: &Keys,
    files: &[FileData],
    plan: &mut Plan,
    want_families: bool,
    render: &dyn Fn(&[MetricFamily]) -> Vec<Rendered>,
) -> Merged {
    let nf = keys.families.len();
    let mut ftype: Vec<Option<Kind>> = vec![None; nf];
    let mut fmode: Vec<Option<Mode>> = vec![None; nf];
    for f in files {
        for &fam in &f.families {
            let i = fam as usize;
            ftype[i].get_or_insert(f.kind);
            if f.kind == Kind::Gauge {
                fmode[i] = f.mode;
            }
        }
    }
    plan.clear();
    let mut dropped = 0u64;
    let (accs, buckets) = (&mut plan.accs, &mut plan.buckets);
    for f in files {
        for &(key, v, ts) in &f.values {
            let p = &keys.parsed[key as usize];
            let fam = p.family as usize;
            let t = ftype[fam].unwrap_or(f.kind);
            let mode = fmode[fam].unwrap_or(Mode::All);
            let drops_pid = t == Kind::Gauge && !mode.keeps_pid();
            let pid = if f.kind == Kind::Gauge && !drops_pid {
                f.pid
            } else {
                0
            };
            if t == Kind::Histogram {
                if let Some(le) = p.le {
                    if le.is_nan() {
                        dropped += 1;
                        continue;
                    }
                    let le = if le == 0.0 { 0.0 } else { le };
                    let b = buckets
                        .entry((p.group as u64) << 32 | pid as u64)
                        .or_default();
                    match b.iter_mut().find(|(l, _)| *l == le) {
                        Some((_, s)) => *s += v,
                        None => b.push((le, v)),
                    }
                    continue;
                }
            }
            let acc = accs
                .entry((p.series as u64) << 32 | pid as u64)
                .or_default();
            match (t, mode) {
                (Kind::Gauge, Mode::Min | Mode::LiveMin) => {
                    if !acc.present || v < acc.value {
                        acc.value = v;
                    }
                    acc.present = true;
                }
                (Kind::Gauge, Mode::Max | Mode::LiveMax) => {
                    if !acc.present || v > acc.value {
                        acc.value = v;
                    }
                    acc.present = true;
                }
                (Kind::Gauge, Mode::MostRecent | Mode::LiveMostRecent) => {
                    // Python keeps a sample only once a timestamp beats 0.0.
                    if acc.ts < ts {
                        acc.value = v;
                        acc.ts = ts;
                        acc.present = true;
                    }
                }
                (Kind::Gauge, Mode::All | Mode::LiveAll) => {
                    acc.value = v;
                    acc.present = true;
                }
                _ => {
                    acc.value += v;
                    acc.present = true;
                }
            }
        }
    }
    if !want_families {
        if let Some((exposed, generation, more)) = plan.refresh(&ftype, &fmode) {
            return Merged {
                exposed,
                families: None,
                generation,
                dropped: dropped + more,
            };
        }
    }
    let (accs, buckets) = (&plan.accs, &mut plan.buckets);
    let nan_dropped = dropped;
    let mut unplaced: Vec<u64> = Vec::new();
    // (family, label group with pid, rank, le, sample): rows sort by family name and
    // the group's labels (pid included), then within a group buckets by le, _count, _sum.
    type Row = (u32, u64, u32, f64, Sample, Slot);
    let mut rows: Vec<Row> = Vec::with_capacity(accs.len() + buckets.len() * 16);
    let with_pid = |labels: &[(String, String)], pid: u32| {
        let mut l: Vec<(String, String)> = labels.to_vec();
        if pid != 0 {
            l.retain(|(k, _)| k != "pid");
            l.push(("pid".into(), keys.pids[pid as usize].clone()));
        }
        l
    };
    for (&k, acc) in accs.iter() {
        if !acc.present {
            continue;
        }
        let (sid, pid) = ((k >> 32) as usize, (k & 0xffff_ffff) as u32);
        let s = &keys.series[sid];
        let fam = &keys.families[s.family as usize];
        let t = family_type(ftype[s.family as usize].unwrap_or(Kind::Gauge));
        let sample = keys.sample_name(s);
        if !t.allows_sample(&fam.name, &sample) {
            dropped += 1;
            unplaced.push(k);
            continue;
        }
        let suffix = keys.suffix(s);
        if t == FamilyType::Histogram
            && suffix == "_count"
            && buckets
                .get(&((s.group as u64) << 32 | pid as u64))
                .is_some_and(|b| !b.is_empty())
        {
            unplaced.push(k);
            continue; // replaced by the cumulative total, as in Python
        }
        let labels = with_pid(&keys.labels(s), pid);
        let rank = match suffix {
            "_count" => 1,
            "_sum" => 2,
            _ => 0,
        };
        rows.push((
            s.family,
            (s.group as u64) << 32 | pid as u64,
            rank,
            0.0,
            Sample {
                name: sample,
                labels,
                value: acc.value,
            },
            Slot::Acc(k),
        ));
    }
    for (&k, b) in buckets.iter_mut() {
        if b.is_empty() {
            continue;
        }
        let (gid, pid) = ((k >> 32) as usize, (k & 0xffff_ffff) as u32);
        let (fam_id, ref labels) = keys.groups[gid];
        let group = with_pid(labels, pid);
        let fam = &keys.families[fam_id as usize];
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut total = 0.0;
        for (i, &(le, v)) in b.iter().enumerate() {
            total += v;
            let mut labels = group.clone();
            labels.push(("le".into(), go_float_string(le)));
            rows.push((
                fam_id,
                k,
                0,
                le,
                Sample {
                    name: format!("{}_bucket", fam.name),
                    labels,
                    value: total,
                },
                Slot::Bucket(k, i as u32),
            ));
        }
        rows.push((
            fam_id,
            k,
            1,
            0.0,
            Sample {
                name: format!("{}_count", fam.name),
                labels: group,
                value: total,
            },
            Slot::Count(k),
        ));
    }
    // Label sets are compared once per distinct group, not once per row comparison:
    // each group gets its ordinal in (family name, labels) order, equal sets equal ones.
    let mut groups: Vec<(u64, Vec<(String, String)>)> = rows
        .iter()
        .map(|r| r.1)
        .collect::<std::collections::HashSet<u64, BuildHasherDefault<U64Hasher>>>()
        .into_iter()
        .map(|k| {
            let labels = &keys.groups[(k >> 32) as usize].1;
            (k, with_pid(labels, (k & 0xffff_ffff) as u32))
        })
        .collect();
    let family_name = |k: u64| &keys.families[keys.groups[(k >> 32) as usize].0 as usize].name;
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
        r.1 = u64::from(ordinal[&r.1]);
    }
    rows.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)).then(a.3.total_cmp(&b.3)));
    let mut out: Vec<MetricFamily> = Vec::new();
    let mut slots: Vec<Vec<Slot>> = Vec::new();
    let mut sig = (
        plan.signature_keys.0.build_hasher(),
        plan.signature_keys.1.build_hasher(),
    );
    for (fam, _, _, le, sample, slot) in rows {
        let row = (
            fam,
            ftype[fam as usize].map(|k| k as u8),
            slot_key(slot),
            le.to_bits(),
        );
        row.hash(&mut sig.0);
        row.hash(&mut sig.1);
        let info = &keys.families[fam as usize];
        if out.last().is_none_or(|f| f.name != info.name) {
            out.push(MetricFamily {
                name: info.name.clone(),
                kind: family_type(ftype[fam as usize].unwrap_or(Kind::Gauge)),
                help: info.help.clone(),
                samples: Vec::new(),
            });
            slots.push(Vec::new());
        }
        out.last_mut().expect("pushed").samples.push(sample);
        slots.last_mut().expect("pushed").push(slot);
    }
    let signature = (sig.0.finish(), sig.1.finish());
    let (generation, layout) = match plan.same_series(signature) {
        Some((g, layout)) => (Some(g), layout),
        None => (None, Arc::new(Layout::of(&out, render(&out)))),
    };
    let exposed = Arc::new(Exposed {
        layout,
        values: out
            .iter()
            .map(|f| f.samples.iter().map(|s| s.value).collect())
            .collect(),
    });
    let generation = plan.keep(
        ftype,
        fmode,
        &exposed,
        &slots,
        &unplaced,
        dropped - nan_dropped,
        signature,
        generation,
    );
    Merged {
        exposed,
        families: want_families.then(|| Arc::new(out)),
        generation,
        dropped,
    }
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
