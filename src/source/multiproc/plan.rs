//! What one merge leaves for the next. A full merge (hash maps of accumulators,
//! sorting, a layout) runs only when the series set changes; it then compiles a
//! `Program`: each file entry's accumulator slot, numbered once. While the files
//! and their entries stay the same, a scrape is: read values, add each into its
//! slot, copy the slots into the kept sample order. No hash lookup per entry (a
//! 64-process SGLang directory has 52,032 of them per scrape), no sort, no
//! allocation per series.

use super::exposed::Exposed;
use super::file::{Kind, Mode};
use super::keys::Keys;
use super::merge::FileData;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Numbers each full merge, across directories and cache resets.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A multiply-shift hasher for the u64 keys of the accumulators.
#[derive(Default)]
pub(super) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        // Keys carry their information in both halves (id << 32 | pid) and the table
        // indexes by the low bits: fold the high bits down.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n ^ (n >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<U64Hasher>>;

/// How an entry's value goes into its series' running value (Python's rules).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Op {
    /// Counters, summaries, histogram `_sum`/`_count`, `sum` gauges: added to 0.0.
    Sum,
    /// A histogram bucket: the first value, then added.
    Bucket,
    /// `min` gauges.
    Min,
    /// `max` gauges.
    Max,
    /// `mostrecent` gauges: the value with the newest timestamp beating 0.0.
    Recent,
    /// `all` gauges (one per pid): the last value.
    Last,
}

/// One series' running value over the files of a scrape.
#[derive(Default, Clone, Copy)]
pub(super) struct Acc {
    pub value: f64,
    pub ts: f64,
    pub present: bool,
}

impl Acc {
    /// Folds one entry in.
    #[inline]
    pub(super) fn add(&mut self, op: Op, v: f64, ts: f64) {
        match op {
            Op::Min => {
                if !self.present || v < self.value {
                    self.value = v;
                }
                self.present = true;
            }
            Op::Max => {
                if !self.present || v > self.value {
                    self.value = v;
                }
                self.present = true;
            }
            Op::Recent => {
                // Python keeps a sample only once a timestamp beats 0.0.
                if self.ts < ts {
                    self.value = v;
                    self.ts = ts;
                    self.present = true;
                }
            }
            Op::Last => {
                self.value = v;
                self.present = true;
            }
            Op::Bucket if !self.present => {
                self.value = v;
                self.present = true;
            }
            Op::Sum | Op::Bucket => {
                self.value += v;
                self.present = true;
            }
        }
    }
}

/// Where an entry's value goes.
pub(super) enum Target {
    /// Left out (a histogram `le` that is not a number), counted.
    Drop,
    /// The accumulator of this key (series << 32 | pid).
    Acc(u64, Op),
    /// The bucket of this `le` in this bucket group (group << 32 | pid).
    Bucket(u64, f64),
}

/// Python's rules for one entry of file `f`, given each family's type (that of the
/// first file holding it) and gauge mode (that of the last gauge file holding it).
pub(super) fn target(
    keys: &Keys,
    ftype: &[Option<Kind>],
    fmode: &[Option<Mode>],
    f: &FileData,
    key: u32,
) -> Target {
    let p = keys.series_of(key);
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
        if let Some(le) = keys.le_value(p) {
            if le.is_nan() {
                return Target::Drop;
            }
            let le = if le == 0.0 { 0.0 } else { le };
            return Target::Bucket((p.group as u64) << 32 | pid as u64, le);
        }
    }
    let op = match (t, mode) {
        (Kind::Gauge, Mode::Min | Mode::LiveMin) => Op::Min,
        (Kind::Gauge, Mode::Max | Mode::LiveMax) => Op::Max,
        (Kind::Gauge, Mode::MostRecent | Mode::LiveMostRecent) => Op::Recent,
        (Kind::Gauge, Mode::All | Mode::LiveAll) => Op::Last,
        _ => Op::Sum,
    };
    let series = if drops_pid {
        keys.series_id_nopid(key)
    } else {
        keys.series_id(key)
    };
    Target::Acc((series as u64) << 32 | pid as u64, op)
}

/// Where a sample of the merged output comes from.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// The accumulator of this key.
    Acc(u64),
    /// Bucket `i` (in `le` order) of this bucket group, cumulative.
    Bucket(u64, u32),
    /// The total of this bucket group (its `_count`).
    Count(u64),
}

/// An entry that feeds nothing.
const DROP: u32 = u32::MAX;

/// What identifies a file's entries between scrapes: device, inode, `used`, entries,
/// and the kind, mode and pid its name gives.
pub type FileSig = (u64, u64, usize, usize, Kind, Option<Mode>, u32);

/// A full merge compiled to slots: valid while the same files come in the same order
/// with the same entries (then every entry has the same key, so the same target).
#[derive(Default)]
pub(super) struct Program {
    files: Vec<FileSig>,
    /// Each entry's slot, file after file, or [`DROP`].
    targets: Vec<u32>,
    ops: Vec<Op>,
    /// Which slots had a value in the compiled merge (a `mostrecent` gauge whose
    /// timestamps never beat 0.0 has none): any change is a new series set.
    expect: Vec<bool>,
    accs: Vec<Acc>,
    /// (slot, sample) of every sample copied from one slot.
    copies: Vec<(u32, u32)>,
    /// (first slot, buckets, first of its positions) per bucket group, slots in `le` order.
    bucket_groups: Vec<(u32, u32, u32)>,
    /// Per bucket group: each bucket's sample, then its `_count`'s.
    positions: Vec<u32>,
}

/// Reused state of one directory's merges.
#[derive(Default)]
pub struct Plan {
    /// The full merge's accumulators; emptied once a program is compiled from them.
    pub(super) accs: FastMap<u64, Acc>,
    /// (le, sum) per bucket group.
    pub(super) buckets: FastMap<u64, Vec<(f64, f64)>>,
    /// Independent random keys of the row signature's two halves.
    pub(super) signature_keys: (std::hash::RandomState, std::hash::RandomState),
    shape: Option<Shape>,
    /// Scrapes served by the compiled program (tests prove the fast path runs).
    pub(super) steady_runs: u64,
}

/// The last full merge: its output, identity and program.
struct Shape {
    /// Samples and entries the merge left out (the same while its program holds).
    dropped: u64,
    generation: u64,
    /// Hash of the merged rows (family, source and `le` of every sample, in order):
    /// a full merge with the same one has the same series and keeps the generation.
    signature: (u64, u64),
    exposed: Arc<Exposed>,
    /// `None` when the merge could not be compiled (then every scrape merges fully).
    program: Option<Program>,
}

impl Plan {
    /// The last full merge's layout when its rows hashed to `signature`.
    pub(super) fn same_series(
        &self,
        signature: (u64, u64),
    ) -> Option<(u64, Arc<super::exposed::Layout>)> {
        let s = self.shape.as_ref()?;
        (s.signature == signature).then(|| (s.generation, s.exposed.layout.clone()))
    }

    /// The last merge's output and generation.
    pub(super) fn last(&self) -> Option<(Arc<Exposed>, u64)> {
        let s = self.shape.as_ref()?;
        Some((s.exposed.clone(), s.generation))
    }

    /// Runs the compiled program over this scrape's files: (merged, generation,
    /// dropped), or `None` when anything differs from the compiled merge (files,
    /// entries, which series have a value) and a full merge must run.
    pub(super) fn steady(
        &mut self,
        files: &[FileData],
        values: &[(u32, f64, f64)],
    ) -> Option<(Arc<Exposed>, u64, u64)> {
        let shape = self.shape.as_mut()?;
        let p = shape.program.as_mut()?;
        if files.len() != p.files.len()
            || files
                .iter()
                .zip(&p.files)
                .any(|(f, s)| f.fresh || f.sig != *s)
        {
            return None;
        }
        p.accs.fill(Acc::default());
        let mut targets = p.targets.iter();
        for f in files {
            for &(_, v, ts) in &values[f.range.clone()] {
                let &t = targets.next()?;
                if t != DROP {
                    p.accs[t as usize].add(p.ops[t as usize], v, ts);
                }
            }
        }
        if p.accs.iter().zip(&p.expect).any(|(a, &e)| a.present != e) {
            return None;
        }
        // Copies the values (not the shared layout) if a slow client still holds them.
        let out = &mut Arc::make_mut(&mut shape.exposed).values;
        for &(slot, at) in &p.copies {
            out[at as usize] = p.accs[slot as usize].value;
        }
        for &(first, n, pos) in &p.bucket_groups {
            let (first, n, pos) = (first as usize, n as usize, pos as usize);
            let mut total = 0.0;
            for i in 0..n {
                total += p.accs[first + i].value;
                out[p.positions[pos + i] as usize] = total;
            }
            out[p.positions[pos + n] as usize] = total;
        }
        self.steady_runs += 1;
        Some((shape.exposed.clone(), shape.generation, shape.dropped))
    }

    /// Keeps a full merge's output and compiles its program: `slots[i]` says where
    /// sample `i` came from. `generation` is the one [`Plan::same_series`] gave, or
    /// `None` for a new one. Returns the merge's generation: equal generations have
    /// equal series. Frees the merge's hash maps, which the program replaces.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep(
        &mut self,
        keys: &Keys,
        files: &[FileData],
        values: &[(u32, f64, f64)],
        types: (&[Option<Kind>], &[Option<Mode>]),
        exposed: &Arc<Exposed>,
        slots: &[Slot],
        dropped: u64,
        signature: (u64, u64),
        generation: Option<u64>,
    ) -> u64 {
        let generation = generation.unwrap_or_else(|| GENERATION.fetch_add(1, Relaxed));
        let program = self.compile(keys, files, values, types, slots);
        self.accs = FastMap::default();
        self.buckets = FastMap::default();
        self.shape = Some(Shape {
            dropped,
            generation,
            signature,
            exposed: exposed.clone(),
            program,
        });
        generation
    }

    /// Numbers the full merge's accumulators and buckets as slots and maps every
    /// entry and sample to them; `None` if anything does not fit (never expected:
    /// the entries are the ones the merge just accumulated by the same rules).
    fn compile(
        &self,
        keys: &Keys,
        files: &[FileData],
        values: &[(u32, f64, f64)],
        (ftype, fmode): (&[Option<Kind>], &[Option<Mode>]),
        slots: &[Slot],
    ) -> Option<Program> {
        let mut p = Program::default();
        let mut acc_slot: FastMap<u64, u32> = FastMap::default();
        for (&k, a) in &self.accs {
            acc_slot.insert(k, p.accs.len() as u32);
            p.accs.push(Acc::default());
            p.expect.push(a.present);
            p.ops.push(Op::Sum); // set from the entries below
        }
        // Bucket slots in `le` order (the merge sorted each group), then positions.
        let mut group_at: FastMap<u64, (u32, u32, u32)> = FastMap::default();
        for (&k, b) in &self.buckets {
            if b.is_empty() {
                continue;
            }
            let g = (
                p.accs.len() as u32,
                b.len() as u32,
                p.positions.len() as u32,
            );
            group_at.insert(k, g);
            p.bucket_groups.push(g);
            p.positions.extend(std::iter::repeat_n(DROP, b.len() + 1));
            for _ in b {
                p.accs.push(Acc::default());
                p.expect.push(true);
                p.ops.push(Op::Bucket);
            }
        }
        for (at, slot) in slots.iter().enumerate() {
            let at = at as u32;
            match *slot {
                Slot::Acc(k) => p.copies.push((*acc_slot.get(&k)?, at)),
                Slot::Bucket(k, i) => {
                    let g = group_at.get(&k)?;
                    *p.positions.get_mut((g.2 + i) as usize)? = at;
                }
                Slot::Count(k) => {
                    let g = group_at.get(&k)?;
                    p.positions[(g.2 + g.1) as usize] = at;
                }
            }
        }
        // Every bucket and `_count` has a sample; a program must never index with DROP.
        if p.positions.contains(&DROP) {
            return None;
        }
        for f in files {
            p.files.push(f.sig);
            for &(key, _, _) in values.get(f.range.clone())? {
                let t = match target(keys, ftype, fmode, f, key) {
                    Target::Drop => DROP,
                    Target::Acc(k, op) => {
                        let s = *acc_slot.get(&k)?;
                        p.ops[s as usize] = op;
                        s
                    }
                    Target::Bucket(k, le) => {
                        let g = group_at.get(&k)?;
                        let les = self.buckets.get(&k)?;
                        let i = les.partition_point(|x| x.0 < le);
                        (les.get(i)?.0 == le).then_some(g.0 + i as u32)?
                    }
                };
                p.targets.push(t);
            }
        }
        Some(p)
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
