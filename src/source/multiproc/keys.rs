//! Keys of a multiprocess directory's entries (`json.dumps([metric, sample, labels,
//! help])`), parsed once and interned between scrapes: which family, series and
//! label group each feeds, and the pids of gauge files.

use crate::wire::exposition::{valid_label_name, valid_metric_name};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};

/// A parsed key: which series it feeds.
pub(super) struct Parsed {
    pub(super) family: u32,
    pub(super) series: u32,
    pub(super) group: u32,
    /// The `le` label as a float, when the key has one (NaN when it does not parse).
    pub(super) le: Option<f64>,
}

/// A series keeps no labels of its own: they are its group's plus its `le`, so a
/// directory's label strings are held once, not once per series and again per group.
pub(super) struct Series {
    pub(super) family: u32,
    /// Index of the sample name's suffix in [`SUFFIXES`].
    suffix: u8,
    pub(super) group: u32,
    /// The `le` label's value as written, when it has one.
    le: Option<Box<str>>,
}

/// The sample-name suffixes a key may have after its metric name.
pub(super) const SUFFIXES: [&str; 5] = ["", "_total", "_bucket", "_count", "_sum"];

pub(super) struct FamilyInfo {
    pub(super) name: String,
    pub(super) help: String,
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
    pub(super) parsed: Vec<Parsed>,
    pub(super) series: Vec<Series>,
    /// Series and groups by the same keyed hash of their canonical spelling.
    series_ids: HashMap<(u64, u64), u32>,
    /// Label sets without `le`, with their family.
    pub(super) groups: Vec<(u32, Vec<(String, String)>)>,
    group_ids: HashMap<(u64, u64), u32>,
    pub(super) families: Vec<FamilyInfo>,
    family_ids: HashMap<String, u32>,
    pub(super) pids: Vec<String>,
    pid_ids: HashMap<String, u32>,
}

const BAD: u32 = u32::MAX;

fn canon<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(itoa::Buffer::new().format(p.len()));
        s.push(':');
        s.push_str(p);
    }
    s
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
        let ok = valid_metric_name(&metric)
            && SUFFIXES.contains(&suffix)
            && labels.keys().all(|k| valid_label_name(k));
        if !ok {
            return None;
        }
        let family = match self.family_ids.get(&metric) {
            Some(&f) => f,
            None => {
                let f = self.families.len() as u32;
                self.family_ids.insert(metric.clone(), f);
                self.families.push(FamilyInfo { name: metric, help });
                f
            }
        };
        let suffix = SUFFIXES.iter().position(|s| *s == suffix).expect("checked") as u8;
        let labels: Vec<(String, String)> = labels.into_iter().collect();
        let le = labels
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| parse_python_float(v).unwrap_or(f64::NAN));
        let fam = family.to_string();
        let without_le = || labels.iter().filter(|(k, _)| k != "le");
        let gkey = canon(
            std::iter::once(fam.as_str())
                .chain(without_le().flat_map(|(k, v)| [k.as_str(), v.as_str()])),
        );
        let gkey = self.hash(gkey.as_bytes());
        let group = match self.group_ids.get(&gkey) {
            Some(&g) => g,
            None => {
                let g = self.groups.len() as u32;
                self.groups.push((family, without_le().cloned().collect()));
                self.group_ids.insert(gkey, g);
                g
            }
        };
        let skey = canon(
            [fam.as_str(), sample.as_str()]
                .into_iter()
                .chain(labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()])),
        );
        let skey = self.hash(skey.as_bytes());
        let series = match self.series_ids.get(&skey) {
            Some(&s) => s,
            None => {
                let s = self.series.len() as u32;
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.as_str().into());
                self.series.push(Series {
                    family,
                    suffix,
                    group,
                    le,
                });
                self.series_ids.insert(skey, s);
                s
            }
        };
        let id = self.parsed.len() as u32;
        self.parsed.push(Parsed {
            family,
            series,
            group,
            le,
        });
        Some(id)
    }

    /// A series' sample name suffix (`_bucket`, ...).
    pub(super) fn suffix(&self, s: &Series) -> &'static str {
        SUFFIXES[s.suffix as usize]
    }

    /// A series' sample name.
    pub(super) fn sample_name(&self, s: &Series) -> String {
        let mut n = self.families[s.family as usize].name.clone();
        n.push_str(self.suffix(s));
        n
    }

    /// A series' labels, sorted by name as Python's `tuple(sorted(labels.items()))`.
    pub(super) fn labels(&self, s: &Series) -> Vec<(String, String)> {
        let mut l = self.groups[s.group as usize].1.clone();
        if let Some(le) = &s.le {
            let at = l.partition_point(|(k, _)| k.as_str() < "le");
            l.insert(at, ("le".into(), le.to_string()));
        }
        l
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
        self.parsed[key as usize].family
    }
}

/// Python's `float(s)` for the spellings `floatToGoString` writes (and Rust's own).
fn parse_python_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}
