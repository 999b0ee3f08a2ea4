//! What one merge leaves for the next: the accumulators (cleared, not freed) and,
//! while the set of merged series stays the same, the merged families themselves
//! with each accumulator's sample position, so a steady directory's scrape only
//! writes new values into them instead of building, sorting and freeing every
//! sample again (the allocation and comparison cost a profile of a 64-process
//! SGLang directory was made of).

use super::exposed::Exposed;
use super::file::{Kind, Mode};
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

/// One series' running value over the files of a scrape.
#[derive(Default, Clone, Copy)]
pub(super) struct Acc {
    pub value: f64,
    pub ts: f64,
    pub present: bool,
    /// Where the last full merge put this series (kept across scrapes, so a steady
    /// scrape writes its value without looking it up again).
    pub pos: Option<Pos>,
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

/// (family index, sample index) in the merged output.
type Pos = (u32, u32);
/// An accumulator that feeds no sample (dropped, or a `_count` buckets replace).
const NOWHERE: Pos = (u32::MAX, u32::MAX);

/// Reused state of one directory's merges.
#[derive(Default)]
pub struct Plan {
    pub(super) accs: FastMap<u64, Acc>,
    /// (le, sum) per bucket group; an empty list is a group absent from this scrape.
    pub(super) buckets: FastMap<u64, Vec<(f64, f64)>>,
    /// Independent random keys of the row signature's two halves.
    pub(super) signature_keys: (std::hash::RandomState, std::hash::RandomState),
    shape: Option<Shape>,
}

/// The merged output of the last full merge and where each accumulator went.
struct Shape {
    ftype: Vec<Option<Kind>>,
    fmode: Vec<Option<Mode>>,
    /// Accumulators the merge placed (their [`Acc::pos`] is set).
    placed: usize,
    /// The group's `le`s in order, and the position of each bucket then its count.
    bucket_pos: FastMap<u64, (Vec<f64>, Vec<Pos>)>,
    dropped: u64,
    generation: u64,
    /// Hash of the merged rows (family, source and `le` of every sample, in order):
    /// a full merge with the same one has the same series and keeps the generation.
    signature: (u64, u64),
    exposed: Arc<Exposed>,
}

impl Plan {
    /// Empties the accumulators, keeping their memory and their positions; series
    /// gone since the last full merge are dropped once they are most of the table.
    pub(super) fn clear(&mut self) {
        let placed = self.shape.as_ref().map_or(0, |s| s.placed);
        if self.accs.len() > 2 * placed + 1024 {
            self.accs.retain(|_, a| a.pos.is_some());
        }
        for a in self.accs.values_mut() {
            *a = Acc {
                pos: a.pos,
                ..Acc::default()
            };
        }
        for b in self.buckets.values_mut() {
            b.clear();
        }
        if self.buckets.len()
            > 4 * self.buckets.values().filter(|b| b.capacity() > 0).count() + 1024
        {
            self.buckets.retain(|_, b| b.capacity() > 0);
        }
    }

    /// The last full merge's layout when its rows hashed to `signature`.
    pub(super) fn same_series(
        &self,
        signature: (u64, u64),
    ) -> Option<(u64, Arc<super::exposed::Layout>)> {
        let s = self.shape.as_ref()?;
        (s.signature == signature).then(|| (s.generation, s.exposed.layout.clone()))
    }

    /// Writes this scrape's values into the last merge's families when the scrape
    /// has exactly its series (same family types and modes, same accumulators, same
    /// buckets): (families, generation, samples dropped); `None` when anything
    /// differs and a full merge must run. Bucket lists come out sorted by `le`.
    pub(super) fn refresh(
        &mut self,
        ftype: &[Option<Kind>],
        fmode: &[Option<Mode>],
    ) -> Option<(Arc<Exposed>, u64, u64)> {
        let shape = self.shape.as_mut()?;
        let present = self.accs.values().filter(|a| a.present).count();
        let groups = self.buckets.values().filter(|b| !b.is_empty()).count();
        if shape.ftype != ftype
            || shape.fmode != fmode
            || present != shape.placed
            || groups != shape.bucket_pos.len()
        {
            return None;
        }
        // Checked before writing, so a mismatch leaves the kept families intact.
        if self.accs.values().any(|a| a.present && a.pos.is_none()) {
            return None;
        }
        for (k, b) in self.buckets.iter_mut() {
            if b.is_empty() {
                continue;
            }
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let (les, _) = shape.bucket_pos.get(k)?;
            if les.len() != b.len() || les.iter().zip(b.iter()).any(|(l, (x, _))| *l != *x) {
                return None;
            }
        }
        // Copies the values (not the shared layout) if a slow client still holds them.
        let values = &mut Arc::make_mut(&mut shape.exposed).values;
        let mut set = |(f, s): Pos, v: f64| {
            if (f, s) != NOWHERE {
                values[f as usize][s as usize] = v;
            }
        };
        for a in self.accs.values() {
            if let (true, Some(pos)) = (a.present, a.pos) {
                set(pos, a.value);
            }
        }
        for (k, b) in &self.buckets {
            if b.is_empty() {
                continue;
            }
            let pos = &shape.bucket_pos[k].1;
            let mut total = 0.0;
            for (i, &(_, v)) in b.iter().enumerate() {
                total += v;
                set(pos[i], total);
            }
            set(pos[b.len()], total);
        }
        Some((shape.exposed.clone(), shape.generation, shape.dropped))
    }

    /// Keeps a full merge's output: `slots[f][s]` says where sample `s` of family `f`
    /// came from, `unplaced` are the present accumulators that feed no sample.
    /// `generation` is the one [`Plan::same_series`] gave, or `None` for a new one.
    /// Returns the merge's generation: equal generations have equal series.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn keep(
        &mut self,
        ftype: Vec<Option<Kind>>,
        fmode: Vec<Option<Mode>>,
        exposed: &Arc<Exposed>,
        slots: &[Vec<Slot>],
        unplaced: &[u64],
        dropped: u64,
        signature: (u64, u64),
        generation: Option<u64>,
    ) -> u64 {
        let generation = generation.unwrap_or_else(|| GENERATION.fetch_add(1, Relaxed));
        for a in self.accs.values_mut() {
            a.pos = None;
        }
        let mut placed = 0;
        let mut place = |accs: &mut FastMap<u64, Acc>, k: u64, at: Pos| {
            if let Some(a) = accs.get_mut(&k) {
                if a.pos.is_none() {
                    placed += 1;
                }
                a.pos = Some(at);
            }
        };
        for &k in unplaced {
            place(&mut self.accs, k, NOWHERE);
        }
        let mut bucket_pos: FastMap<u64, (Vec<f64>, Vec<Pos>)> = FastMap::default();
        for (k, b) in &self.buckets {
            if !b.is_empty() {
                let les = b.iter().map(|x| x.0).collect();
                bucket_pos.insert(*k, (les, vec![NOWHERE; b.len() + 1]));
            }
        }
        for (f, fs) in slots.iter().enumerate() {
            for (s, slot) in fs.iter().enumerate() {
                let at = (f as u32, s as u32);
                match *slot {
                    Slot::Acc(k) => place(&mut self.accs, k, at),
                    Slot::Bucket(k, i) => {
                        if let Some(p) = bucket_pos.get_mut(&k) {
                            p.1[i as usize] = at;
                        }
                    }
                    Slot::Count(k) => {
                        if let Some(p) = bucket_pos.get_mut(&k) {
                            let n = p.0.len();
                            p.1[n] = at;
                        }
                    }
                }
            }
        }
        self.shape = Some(Shape {
            ftype,
            fmode,
            placed,
            bucket_pos,
            dropped,
            generation,
            signature,
            exposed: exposed.clone(),
        });
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MultiprocDir, MultiprocSettings};

    fn db(entries: &[(&str, f64)]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        for (key, v) in entries {
            let k = key.as_bytes();
            b.extend((k.len() as i32).to_ne_bytes());
            b.extend(k);
            b.resize(b.len() + 8 - (k.len() + 4) % 8, b' ');
            b.extend(v.to_ne_bytes());
            b.extend(0f64.to_ne_bytes());
        }
        let used = b.len() as i32;
        b[..4].copy_from_slice(&used.to_ne_bytes());
        b
    }

    #[test]
    fn steady_scrapes_refresh_values_and_new_series_rebuild() {
        let dir = std::env::temp_dir().join(format!("fpm-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("counter_1.db");
        let a = r#"["c", "c_total", {}, "h"]"#;
        let b = r#"["c", "c_total", {"x": "y"}, "h"]"#;
        let settings = MultiprocSettings {
            pid_check: false,
            ..Default::default()
        };
        let d = MultiprocDir::new("e", &[], dir.clone(), settings);
        let values = |f: &[crate::wire::exposition::MetricFamily]| -> Vec<f64> {
            f.iter()
                .flat_map(|f| f.samples.iter().map(|s| s.value))
                .collect()
        };
        std::fs::write(&file, db(&[(a, 1.0)])).unwrap();
        let (f1, g1) = d.collect();
        assert_eq!(values(&f1), [1.0]);
        drop(f1);
        std::fs::write(&file, db(&[(a, 2.0)])).unwrap();
        let (f2, g2) = d.collect();
        assert_eq!(
            (values(&f2), g2),
            (vec![2.0], g1),
            "same series: values refreshed"
        );
        drop(f2);
        std::fs::write(&file, db(&[(a, 3.0), (b, 4.0)])).unwrap();
        let (f3, g3) = d.collect();
        assert_eq!(values(&f3), [3.0, 4.0], "a new key is merged");
        assert_ne!(g3, g1);
        drop(f3);
        // A series that leaves and comes back must not write through the position
        // it had in an older merge's output.
        std::fs::write(&file, db(&[(b, 5.0)])).unwrap();
        assert_eq!(values(&d.collect().0), [5.0], "a's series left");
        std::fs::write(&file, db(&[(a, 6.0), (b, 7.0)])).unwrap();
        assert_eq!(values(&d.collect().0), [6.0, 7.0], "a came back");
        std::fs::write(&file, db(&[(a, 8.0), (b, 9.0)])).unwrap();
        assert_eq!(values(&d.collect().0), [8.0, 9.0], "steady again");
        std::fs::remove_file(&file).unwrap();
        let (f4, _) = d.collect();
        assert!(values(&f4).is_empty(), "a vanished file's series are gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scrapes_write_values_into_one_kept_layout() {
        let dir = std::env::temp_dir().join(format!("fpm-plan-x-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("counter_1.db");
        let a = r#"["c", "c_total", {"q": "a\"b"}, "h"]"#;
        let b = r#"["c", "c_total", {"x": "y"}, "h"]"#;
        let settings = MultiprocSettings {
            pid_check: false,
            ..Default::default()
        };
        let d = MultiprocDir::new("e", &[], dir.clone(), settings);
        let lines = |e: &super::super::exposed::Exposed| -> Vec<String> {
            let l = &e.layout;
            l.prefixes
                .iter()
                .zip(&e.values)
                .flat_map(|(p, v)| (0..v.len()).map(move |i| format!("{} {}", p.get(i), v[i])))
                .collect()
        };
        std::fs::write(&file, db(&[(a, 1.0)])).unwrap();
        let e1 = d.collect_exposed();
        assert_eq!(
            lines(&e1),
            [r#"c_total{engine="e",worker_addr="DIR",q="a\"b"} 1"#
                .replace("DIR", &dir.to_string_lossy())]
        );
        std::fs::write(&file, db(&[(a, 2.0)])).unwrap();
        let e2 = d.collect_exposed();
        assert_eq!(e2.values, [[2.0]], "same series: value refreshed");
        assert_eq!(e1.values, [[1.0]], "a held scrape keeps its values");
        assert!(
            std::sync::Arc::ptr_eq(&e1.layout, &e2.layout),
            "same series: the rendered layout is kept, not rebuilt"
        );
        // The owned families of a full merge agree and leave the layout in place.
        let (f, _) = d.collect();
        assert_eq!(f[0].samples[0].value, 2.0);
        let e3 = d.collect_exposed();
        assert!(std::sync::Arc::ptr_eq(&e1.layout, &e3.layout));
        std::fs::write(&file, db(&[(a, 3.0), (b, 4.0)])).unwrap();
        let e4 = d.collect_exposed();
        assert_eq!(e4.values, [[3.0, 4.0]], "a new key is merged");
        assert_eq!(e4.layout.prefixes[0].ends.len(), 2);
        std::fs::write(&file, db(&[(b, 5.0)])).unwrap();
        assert_eq!(d.collect_exposed().values, [[5.0]], "a's series left");
        std::fs::write(&file, db(&[(a, 6.0), (b, 7.0)])).unwrap();
        assert_eq!(d.collect_exposed().values, [[6.0, 7.0]], "a came back");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            d.collect_exposed().samples(),
            0,
            "a vanished file's series are gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
