//! Keys of a multiprocess directory's entries (`json.dumps([metric, sample, labels,
//! help])`), parsed once and interned between scrapes: which family, series and
//! label group each feeds, and the pids of gauge files.
//!
//! Names are escaped as prometheus_client 0.26 escapes them on output when no
//! escaping is negotiated (`underscores`): it accepts any UTF-8 metric and label name
//! (`http.server.requests`) and writes each character outside the legacy set as `_`.
//! Labels keep Python's order, sorted by their name as written (before escaping).
//!
//! Kept compact, since a 64-process SGLang directory has 52,032 distinct keys: a key
//! is a series id, a series four numbers, a label group a list of interned
//! `(name, value)` pair ids (the pairs repeat across groups and processes), and the
//! raw keys are held as 128-bit keyed hashes, not as bytes.

use crate::wire::exposition::valid_metric_name;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

/// A series keeps no labels of its own: they are its group's plus its `le`.
pub(super) struct Series {
    pub(super) family: u32,
    pub(super) group: u32,
    /// Its `le` label in [`Keys::les`], or [`NO_LE`].
    le: u32,
    /// Index of the sample name's suffix in [`SUFFIXES`].
    suffix: u8,
    /// The same series without a `pid` label (itself when it has none): gauges of
    /// every mode but `all`/`liveall` drop it, as Python does.
    nopid: u32,
}

/// No `le` label.
const NO_LE: u32 = u32::MAX;

/// The sample-name suffixes a key may have after its metric name.
pub(super) const SUFFIXES: [&str; 5] = ["", "_total", "_bucket", "_count", "_sum"];

pub(super) struct FamilyInfo {
    pub(super) name: String,
}

/// A label set without `le`: its family and its `(name, value)` pair ids in Python's
/// order (sorted by name as written).
struct Group {
    family: u32,
    pairs: Box<[u32]>,
    /// Where `le`, and where a gauge file's `pid`, go among the pairs in that order.
    le_at: u32,
    pid_at: u32,
}

/// Keys parsed so far (raw JSON bytes -> series), families, label groups and pids.
#[derive(Default)]
pub struct Keys {
    /// Raw keys by a 128-bit keyed hash rather than by their bytes, which would keep
    /// a second copy of every file's keys (most of a directory's size) in memory; the
    /// two halves are SipHash under independent random keys, so no writer can aim
    /// for a collision.
    raw: HashMap<(u64, u64), u32>,
    raw_hash: (RandomState, RandomState),
    /// Each key id's series.
    key_series: Vec<u32>,
    /// Each key id's help text in [`Keys::helps`]: keys of one family may disagree
    /// (a new engine version), and Python takes the first one each scrape reads.
    key_help: Vec<u32>,
    helps: Vec<Box<str>>,
    help_ids: HashMap<Box<str>, u32>,
    pub(super) series: Vec<Series>,
    /// Series by (group, suffix, `le`): exactly the canonical spelling's parts.
    series_ids: HashMap<(u32, u8, u32), u32>,
    groups: Vec<Group>,
    /// Groups by the keyed hash of their family and pairs.
    group_ids: HashMap<(u64, u64), u32>,
    /// Distinct `(name, value)` label pairs.
    pairs: Vec<(Box<str>, Box<str>)>,
    pair_ids: HashMap<(Box<str>, Box<str>), u32>,
    /// Distinct `le` values as written, with their value (NaN when not a number).
    les: Vec<(Box<str>, f64)>,
    le_ids: HashMap<Box<str>, u32>,
    pub(super) families: Vec<FamilyInfo>,
    family_ids: HashMap<String, u32>,
    pub(super) pids: Vec<String>,
    pid_ids: HashMap<String, u32>,
}

const BAD: u32 = u32::MAX;

/// The id of `v` in an interning table, adding it the first time.
fn intern<K: std::hash::Hash + Eq, T>(
    ids: &mut HashMap<K, u32>,
    list: &mut Vec<T>,
    key: K,
    make: impl FnOnce() -> T,
) -> u32 {
    *ids.entry(key).or_insert_with(|| {
        list.push(make());
        list.len() as u32 - 1
    })
}

impl Keys {
    /// How many distinct raw keys are cached.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The id of a raw key (`json.dumps([metric, sample, labels, help])`), parsing it
    /// the first time; `None` for a key that is not such JSON or names nothing valid.
    pub fn intern(&mut self, raw: &[u8]) -> Option<u32> {
        let h = self.hash(raw);
        if let Some(&id) = self.raw.get(&h) {
            return (id != BAD).then_some(id);
        }
        let id = self.parse(raw).unwrap_or(BAD);
        self.raw.insert(h, id);
        (id != BAD).then_some(id)
    }

    /// A raw key's id if it was parsed before: `Some(None)` for one that was bad,
    /// `None` for one never seen (see [`Keys::intern`]).
    pub fn lookup(&self, raw: &[u8]) -> Option<Option<u32>> {
        let &id = self.raw.get(&self.hash(raw))?;
        Some((id != BAD).then_some(id))
    }

    fn hash(&self, bytes: &[u8]) -> (u64, u64) {
        (
            self.raw_hash.0.hash_one(bytes),
            self.raw_hash.1.hash_one(bytes),
        )
    }

    fn parse(&mut self, raw: &[u8]) -> Option<u32> {
        type Key = (String, String, BTreeMap<String, String>, String);
        let (metric, sample, labels, help): Key = serde_json::from_slice(raw).ok()?;
        let suffix = sample.strip_prefix(metric.as_str())?;
        // What Python's writer refuses: empty names, `__` label names.
        let ok = !metric.is_empty()
            && SUFFIXES.contains(&suffix)
            && labels.keys().all(|k| !k.is_empty() && !k.starts_with("__"));
        if !ok {
            return None;
        }
        let metric = escape_metric_name(metric);
        debug_assert!(valid_metric_name(&metric));
        let suffix = SUFFIXES.iter().position(|s| *s == suffix).expect("checked") as u8;
        let family = match self.family_ids.get(&metric) {
            Some(&f) => f,
            None => {
                let f = self.families.len() as u32;
                self.family_ids.insert(metric.clone(), f);
                self.families.push(FamilyInfo { name: metric });
                f
            }
        };
        let mut le = NO_LE;
        let (mut le_at, mut pid_at, mut pid) = (0, 0, None);
        let mut pairs = Vec::with_capacity(labels.len());
        let mut names = std::collections::HashSet::with_capacity(labels.len());
        for (k, v) in labels {
            // Raw names in sorted order: count those before `le` and `pid` as Python
            // sorts them, before escaping.
            if k == "le" {
                let value = parse_python_float(&v).unwrap_or(f64::NAN);
                let v: Box<str> = v.into();
                le = intern(&mut self.le_ids, &mut self.les, v.clone(), || (v, value));
                continue;
            }
            if k.as_str() < "le" {
                le_at += 1;
            }
            if k.as_str() < "pid" {
                pid_at += 1;
            }
            let name = escape_label_name(k);
            // Two names written differently that escape alike would be one label twice.
            if !names.insert(name.clone()) {
                return None;
            }
            if name == "pid" {
                pid = Some(pairs.len());
            }
            let pair: (Box<str>, Box<str>) = (name.into(), v.into());
            pairs.push(intern(
                &mut self.pair_ids,
                &mut self.pairs,
                pair.clone(),
                || pair,
            ));
        }
        let series = self.series_for(family, pairs.clone(), suffix, le, (le_at, pid_at));
        if let Some(i) = pid {
            pairs.remove(i);
            let le_at = if i < le_at as usize { le_at - 1 } else { le_at };
            let nopid = self.series_for(family, pairs, suffix, le, (le_at, pid_at));
            self.series[series as usize].nopid = nopid;
        }
        let help: Box<str> = help.into();
        let help = intern(&mut self.help_ids, &mut self.helps, help.clone(), || help);
        self.key_series.push(series);
        self.key_help.push(help);
        Some(self.key_series.len() as u32 - 1)
    }

    /// The series of these parts, interning its group.
    fn series_for(
        &mut self,
        family: u32,
        pairs: Vec<u32>,
        suffix: u8,
        le: u32,
        (le_at, pid_at): (u32, u32),
    ) -> u32 {
        let mut gkey = Vec::with_capacity(4 + 4 * pairs.len());
        gkey.extend(family.to_le_bytes());
        gkey.extend(pairs.iter().flat_map(|p| p.to_le_bytes()));
        let gkey = self.hash(&gkey);
        let group = intern(&mut self.group_ids, &mut self.groups, gkey, || Group {
            family,
            pairs: pairs.into(),
            le_at,
            pid_at,
        });
        let id = self.series.len() as u32;
        intern(
            &mut self.series_ids,
            &mut self.series,
            (group, suffix, le),
            || Series {
                family,
                group,
                le,
                suffix,
                nopid: id,
            },
        )
    }

    /// The series of key id `key`.
    pub(super) fn series_of(&self, key: u32) -> &Series {
        &self.series[self.key_series[key as usize] as usize]
    }

    /// The series id of key id `key`.
    pub(super) fn series_id(&self, key: u32) -> u32 {
        self.key_series[key as usize]
    }

    /// The help text id of key id `key` ([`Keys::help`]).
    pub(super) fn help_id(&self, key: u32) -> u32 {
        self.key_help[key as usize]
    }

    /// Help text `id`.
    pub(super) fn help(&self, id: u32) -> &str {
        &self.helps[id as usize]
    }

    /// The series id of key id `key` without a `pid` label.
    pub(super) fn series_id_nopid(&self, key: u32) -> u32 {
        self.series_of(key).nopid
    }

    /// A series' `le` as a float (NaN when it does not parse), when it has one.
    pub(super) fn le_value(&self, s: &Series) -> Option<f64> {
        (s.le != NO_LE).then(|| self.les[s.le as usize].1)
    }

    /// A series' sample name suffix (`_bucket`, ...).
    pub(super) fn suffix(&self, s: &Series) -> &'static str {
        SUFFIXES[s.suffix as usize]
    }

    /// A series' sample name suffix index in [`SUFFIXES`].
    pub(super) fn suffix_index(&self, s: &Series) -> u8 {
        s.suffix
    }

    /// A series' sample name.
    pub(super) fn sample_name(&self, s: &Series) -> String {
        let mut n = self.families[s.family as usize].name.clone();
        n.push_str(self.suffix(s));
        n
    }

    /// The family of label group `g`.
    pub(super) fn group_family(&self, g: u32) -> u32 {
        self.groups[g as usize].family
    }

    /// Label group `g`'s labels, sorted by name.
    fn pairs_of(&self, g: u32) -> Vec<(String, String)> {
        self.groups[g as usize]
            .pairs
            .iter()
            .map(|&p| {
                let (k, v) = &self.pairs[p as usize];
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// A series' labels, sorted by name as Python's `tuple(sorted(labels.items()))`.
    pub(super) fn labels(&self, s: &Series) -> Vec<(String, String)> {
        let mut l = self.pairs_of(s.group);
        if s.le != NO_LE {
            let at = self.groups[s.group as usize].le_at as usize;
            l.insert(at, ("le".into(), self.les[s.le as usize].0.to_string()));
        }
        l
    }

    /// Where a sorted `le` goes among the labels of group key `k` ([`Keys::group_labels`]).
    pub(super) fn group_le_at(&self, k: u64) -> usize {
        self.groups[(k >> 32) as usize].le_at as usize
    }

    /// The `le` label as written of the series of accumulator key `k` (series << 32 | pid).
    pub(super) fn series_le(&self, k: u64) -> Option<&str> {
        let s = &self.series[(k >> 32) as usize];
        (s.le != NO_LE).then(|| &*self.les[s.le as usize].0)
    }

    /// The labels of accumulator key `k` (series << 32 | pid), with its pid.
    pub(super) fn series_labels(&self, k: u64) -> Vec<(String, String)> {
        let s = &self.series[(k >> 32) as usize];
        self.with_pid(self.labels(s), s.group, (k & 0xffff_ffff) as u32)
    }

    /// The labels of group key `k` (group << 32 | pid), with its pid.
    pub(super) fn group_labels(&self, k: u64) -> Vec<(String, String)> {
        let labels = self.pairs_of((k >> 32) as u32);
        self.with_pid(labels, (k >> 32) as u32, (k & 0xffff_ffff) as u32)
    }

    /// `labels` of group `g` with a gauge file's `pid` (id, 0 for none) where Python
    /// sorts it, replacing a `pid` label of the sample's own (as Python's `dict` does).
    fn with_pid(
        &self,
        mut labels: Vec<(String, String)>,
        g: u32,
        pid: u32,
    ) -> Vec<(String, String)> {
        if pid != 0 {
            labels.retain(|(k, _)| k != "pid");
            let pid_at = self.groups[g as usize].pid_at as usize;
            // `pid_at` counts no `le`, which sorts before `pid` when the series has one.
            let at = pid_at + usize::from(labels.iter().any(|(k, _)| k == "le"));
            labels.insert(
                at.min(labels.len()),
                ("pid".into(), self.pids[pid as usize].clone()),
            );
        }
        labels
    }

    /// The id of a pid label value (0 is reserved for "no pid").
    pub fn pid(&mut self, pid: &str) -> u32 {
        if self.pids.is_empty() {
            self.pids.push(String::new());
        }
        if let Some(&p) = self.pid_ids.get(pid) {
            return p;
        }
        let p = self.pids.len() as u32;
        self.pids.push(pid.to_owned());
        self.pid_ids.insert(pid.to_owned(), p);
        p
    }

    /// The family id of a key id.
    pub fn family_of(&self, key: u32) -> u32 {
        self.series_of(key).family
    }
}

/// Python's `escape_metric_name(name, UNDERSCORES)`: a legacy name as it is, any
/// other with every character outside `[a-zA-Z_:]` (and digits past the first) as `_`.
fn escape_metric_name(name: String) -> String {
    if valid_metric_name(&name) {
        return name;
    }
    escape(&name, |c| c == ':')
}

/// Python's `escape_label_name(name, UNDERSCORES)`, the same without `:`.
fn escape_label_name(name: String) -> String {
    if crate::wire::exposition::valid_label_name(&name) {
        return name;
    }
    escape(&name, |_| false)
}

/// Python's `_escape(s, UNDERSCORES, ...)`: one `_` per character (code point) that is
/// no ASCII letter, `_`, digit past the first, or `extra`.
fn escape(s: &str, extra: fn(char) -> bool) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c.is_ascii_alphabetic() || c == '_' || (c.is_ascii_digit() && i > 0) || extra(c);
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Python's `float(s)` for the spellings `floatToGoString` writes (and Rust's own).
fn parse_python_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}
