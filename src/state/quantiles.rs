//! wall_time quantiles per window, in `hdrhistogram`'s buckets.
//!
//! A window of W seconds keeps sub-histograms of S seconds each, S = 1 for W ≤ 15 and
//! ⌊W/5⌋ above; a query merges the K = ⌊W/S⌋ newest (the live one included), so the
//! quantiles cover the last (K-1)·S+1 to K·S whole seconds: never more than W, always
//! more than 7/10 W (49 to 60 s for 60 s), and exactly W (the span of the window's
//! mean) for W ≤ 15. They slide in steps of S.
//! Values are recorded in microseconds with two significant digits (relative error at
//! most 1%).
//!
//! Every sub-histogram, the live one included, is kept sparse: 4 bytes per non-empty
//! bucket, all of a window's in one array, where a dense histogram of this precision is ~7 KB whatever it holds. A
//! rank's wall_time spans a narrow range, so that is a few hundred bytes per window,
//! nothing before the first iteration, and queries merge the counts into [`Counts`],
//! dense over the keys they span, from which the quantiles are read as hdrhistogram's
//! `value_at_quantiles` reads them (the tests hold the two equal).

#[cfg(test)]
use hdrhistogram::Histogram;

/// Significant digits of hdrhistogram's layout that the bucket keys follow (1% relative
/// precision).
pub const SIGFIG: u8 = 2;

/// The quantiles reported for every window, with their label values.
pub const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (1.0, "1")];

/// An empty hdrhistogram of the keys' precision (auto-resizing): the tests' reference.
#[cfg(test)]
pub fn new_histogram() -> Histogram<u32> {
    let mut h = Histogram::new(SIGFIG).expect("2 significant digits is a valid precision");
    h.auto(true);
    h
}

/// Converts seconds to the histogram's microsecond unit (at least 1 µs for busy iterations).
#[inline]
pub fn to_micros(seconds: f64) -> u64 {
    ((seconds * 1e6).round() as u64).max(1)
}

/// Sub-window length and how many sub-windows a query merges, for a W-second window:
/// one-second sub-windows up to 15 s (exact), five or six of ⌊W/5⌋ s above (what
/// every busy rank pays for a long window is a few sub-windows, not W / 8 of them).
pub fn layout(window_secs: u64) -> (u64, u64) {
    let w = window_secs.max(1);
    let sub = if w <= 15 { 1 } else { w / 5 };
    (sub, w / sub)
}

/// hdrhistogram's bucket layout for lowest value 1 and [`SIGFIG`] = 2: 256 sub-buckets
/// (half of them used above bucket 0), so bucket `b` holds values `s << b` for
/// sub-bucket `s` < 256, and `b` = 56 - leading zeros of `v | 255`. The key packs
/// (b, s) into 16 bits in value order; the test checks it against the crate.
#[inline]
fn bucket_key(v: u64) -> u16 {
    let b = 56 - (v | 255).leading_zeros();
    ((b as u16) << 8) | (v >> b) as u16
}

/// The highest value of a key's bucket (what hdrhistogram reports for it).
#[inline]
fn bucket_value(key: u16) -> u64 {
    let (b, s) = ((key >> 8) as u32, (key & 0xff) as u64);
    (s << b).saturating_add(1 << b) - 1
}

/// One non-empty bucket of a sparse sub-histogram: 4 bytes.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    key: u16,
    count: u16,
}

/// One sub-window present in a ring: its tag (sub-window index + 1) and how many
/// buckets it holds in the ring's bucket array.
#[derive(Debug, Clone, Copy)]
struct Run {
    tag: u64,
    len: u32,
}

/// Counts one sample of bucket `key` in `run` (sorted by key, ending at the array's
/// end or not); returns (whether a bucket was inserted, whether its count wrapped).
fn add(buckets: &mut Vec<Bucket>, start: usize, len: usize, key: u16) -> (bool, bool) {
    match buckets[start..start + len].binary_search_by_key(&key, |b| b.key) {
        Ok(i) => {
            let b = &mut buckets[start + i];
            b.count = b.count.wrapping_add(1);
            (false, b.count == 0)
        }
        Err(i) => {
            if buckets.len() == buckets.capacity() {
                // Grow by a quarter, not double: a ring's size levels off, and the
                // spare half of a doubled array would stay with every busy rank.
                buckets.reserve_exact((buckets.len() / 4).max(8));
            }
            buckets.insert(start + i, Bucket { key, count: 1 });
            (true, false)
        }
    }
}

/// The ring of sub-histograms for one window.
///
/// Every sub-window's non-empty buckets lie in one array, oldest sub-window first and
/// each sorted by key, so a ring is two allocations whatever K: with an array per
/// sub-window, a new one every S seconds and the oldest freed, a thousand busy ranks
/// kept churning small blocks of every size, and glibc's chunk headers and the holes
/// between them cost about as much as the buckets.
#[derive(Debug, Clone)]
pub struct QuantileRing {
    sub_secs: u64,
    subs: u64,
    /// At most K sub-windows, sorted by tag; empty (no allocation) until the first
    /// iteration, then allocated for K at once (it never holds more).
    runs: Vec<Run>,
    /// The runs' buckets, in the runs' order.
    buckets: Vec<Bucket>,
    /// One (tag, key) per 65,536 counts a bucket of sub-window `tag` overflowed by:
    /// empty unless one sub-window holds that many samples of one bucket, so no sample
    /// is ever dropped, and kept here rather than beside every sub-window's buckets.
    spill: Vec<(u64, u16)>,
}

impl QuantileRing {
    /// A ring for a window of `window_secs` seconds.
    pub fn new(window_secs: u64) -> Self {
        let (sub_secs, subs) = layout(window_secs);
        QuantileRing {
            sub_secs,
            subs,
            runs: Vec::new(),
            buckets: Vec::new(),
            spill: Vec::new(),
        }
    }

    /// Records one wall_time (seconds) at second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, seconds: f64) {
        let tag = now_sec / self.sub_secs + 1;
        let key = bucket_key(to_micros(seconds));
        let newest = self.runs.last().map_or(0, |r| r.tag);
        if tag > newest {
            // A new live sub-window: drop what no window can reach from it.
            let keep_from = tag.saturating_sub(self.subs - 1);
            let gone = self.runs.partition_point(|r| r.tag < keep_from);
            if gone > 0 {
                let n: usize = self.runs[..gone].iter().map(|r| r.len as usize).sum();
                self.buckets.drain(..n);
                self.runs.drain(..gone);
                self.spill.retain(|s| s.0 >= keep_from);
                // A burst's buckets are gone: give back what the array will not need.
                if self.buckets.capacity() > 2 * self.buckets.len() + 64 {
                    self.buckets
                        .shrink_to(self.buckets.len() + self.buckets.len() / 4 + 8);
                }
            }
            if self.runs.capacity() == 0 {
                self.runs.reserve_exact(self.subs as usize);
            }
            self.runs.push(Run { tag, len: 0 });
        } else if tag + self.subs <= newest {
            // Older than K sub-windows: outside every window from now on.
            return;
        }
        // The live sub-window, or a late frame's (its task read the clock before a
        // sub-window turned), which belongs to a completed one.
        let i = self.runs.partition_point(|r| r.tag < tag);
        if self.runs.get(i).is_none_or(|r| r.tag != tag) {
            self.runs.insert(i, Run { tag, len: 0 });
        }
        let start: usize = self.runs[..i].iter().map(|r| r.len as usize).sum();
        let (inserted, wrapped) = add(&mut self.buckets, start, self.runs[i].len as usize, key);
        if inserted {
            self.runs[i].len += 1;
        }
        if wrapped {
            self.spill.push((tag, key));
        }
    }

    /// Adds the sub-histograms of the window ending at second `now_sec` into `out`.
    pub fn merge_into(&self, now_sec: u64, out: &mut Counts) {
        let newest = now_sec / self.sub_secs + 1;
        let lowest = newest.saturating_sub(self.subs - 1);
        let inside = |tag: u64| tag >= lowest && tag <= newest;
        let runs = || {
            let mut start = 0;
            self.runs.iter().filter_map(move |r| {
                let run = &self.buckets[start..start + r.len as usize];
                start += r.len as usize;
                (inside(r.tag) && !run.is_empty()).then_some(run)
            })
        };
        let spilled = || self.spill.iter().filter(|s| inside(s.0)).map(|s| s.1);
        // Every run is sorted by key: its ends bound the keys it holds.
        let mut bounds = runs()
            .flat_map(|run| [run[0].key, run[run.len() - 1].key])
            .chain(spilled());
        let Some(first) = bounds.next() else {
            return;
        };
        let (lo, hi) = bounds.fold((first, first), |(lo, hi), k| (lo.min(k), hi.max(k)));
        out.cover(lo, hi);
        for run in runs() {
            for b in run {
                out.add(b.key, b.count as u64);
            }
        }
        for key in spilled() {
            out.add(key, 1 << 16);
        }
    }

    /// Heap bytes this ring holds (for the memory budget's tests).
    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.spill.capacity() * std::mem::size_of::<(u64, u16)>()
    }
}

/// Sample counts per bucket key, dense over the keys merged in so far: what a query
/// merges a window's sub-histograms into, and an engine its ranks' windows.
///
/// Not hdrhistogram's `Histogram`, whose counts span every bucket from 1 µs to the
/// highest value: resetting it, recording every sparse bucket into it and adding it
/// to the engine's was 40% of a 1,024-rank scrape; a window here spans a few hundred
/// keys (the same buckets, so the same quantiles).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Key of `counts[0]`.
    base: u16,
    counts: Vec<u64>,
    total: u64,
}

impl Counts {
    /// Empties it, keeping its allocation.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.total = 0;
    }

    /// Number of samples counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether no sample is counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Makes keys `lo..=hi` addressable.
    fn cover(&mut self, lo: u16, hi: u16) {
        if self.counts.is_empty() {
            self.base = lo;
            self.counts.resize((hi - lo) as usize + 1, 0);
            return;
        }
        if lo < self.base {
            let more = (self.base - lo) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, more));
            self.base = lo;
        }
        let end = self.base as usize + self.counts.len();
        if hi as usize >= end {
            self.counts.resize((hi - self.base) as usize + 1, 0);
        }
    }

    /// Counts `n` samples of bucket `key` (covered).
    #[inline]
    fn add(&mut self, key: u16, n: u64) {
        self.counts[(key - self.base) as usize] += n;
        self.total += n;
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &Counts) {
        if other.total == 0 {
            return;
        }
        let hi = other.base + (other.counts.len() - 1) as u16;
        self.cover(other.base, hi);
        let at = (other.base - self.base) as usize;
        for (c, o) in self.counts[at..].iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.total += other.total;
    }

    /// Quantiles in seconds, in [`QUANTILES`] order (zeros when empty), as
    /// hdrhistogram's `value_at_quantiles` and `max` give them for the same counts.
    pub fn quantiles(&self) -> [f64; 4] {
        let mut out = [0.0; 4];
        let Some(last) = self.counts.iter().rposition(|&c| c > 0) else {
            return out;
        };
        let seconds = |i: usize| bucket_value(self.base + i as u16) as f64 / 1e6;
        let (mut seen, mut next) = (0u64, 0usize);
        for (o, (q, _)) in out
            .iter_mut()
            .zip(QUANTILES.iter().filter(|(q, _)| *q < 1.0))
        {
            let target = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
            while seen < target {
                seen += self.counts[next];
                next += 1;
            }
            *o = seconds(next - 1);
        }
        out[QUANTILES.len() - 1] = seconds(last);
        out
    }

    /// The same counts in an hdrhistogram (the tests' reference).
    #[cfg(test)]
    pub fn to_histogram(&self) -> Histogram<u32> {
        let mut h = new_histogram();
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                h.record_n(bucket_value(self.base + i as u16), n as u32)
                    .unwrap();
            }
        }
        h
    }
}

/// Quantiles of an hdrhistogram, in seconds, in [`QUANTILES`] order (zeros when empty):
/// the reference [`Counts::quantiles`] is tested against.
#[cfg(test)]
pub fn quantiles_of(h: &Histogram<u32>) -> [f64; 4] {
    if h.is_empty() {
        return [0.0; 4];
    }
    let mut out = [0.0; 4];
    // One pass over the counts for every quantile below 1 (they are in ascending order).
    let below_one = QUANTILES.iter().filter(|(q, _)| *q < 1.0).map(|(q, _)| *q);
    for (o, v) in out.iter_mut().zip(h.value_at_quantiles(below_one)) {
        *o = v as f64 / 1e6;
    }
    out[QUANTILES.len() - 1] = h.max() as f64 / 1e6;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn quantiles_within_stated_precision() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut ring = QuantileRing::new(10);
        let mut xs: Vec<f64> = (0..20_000).map(|_| rng.gen_range(0.002..0.400)).collect();
        for &x in &xs {
            ring.record(3, x);
        }
        let mut h = Counts::default();
        ring.merge_into(3, &mut h);
        let got = h.quantiles();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for (i, (q, _)) in QUANTILES.iter().enumerate() {
            let exact = xs[(((xs.len() as f64) * q).ceil() as usize).clamp(1, xs.len()) - 1];
            let rel = (got[i] - exact).abs() / exact;
            // 2 significant digits: 1% value precision, plus rank slack of one bucket.
            assert!(rel <= 0.011, "q{q}: got {} exact {exact} rel {rel}", got[i]);
        }
    }

    /// First second a query at `t` covers, from the documented rule alone.
    fn cover_start(window: u64, t: u64) -> u64 {
        let (s, k) = layout(window);
        (t / s).saturating_sub(k - 1) * s
    }

    #[test]
    fn span_is_between_seven_tenths_and_all_of_the_window_for_every_allowed_w() {
        for w in 1..=3600u64 {
            let (s, k) = layout(w);
            for t in 10_000..10_000 + 2 * s {
                // Whole seconds covered, the current one included.
                let span = t - cover_start(w, t) + 1;
                assert!(span <= w, "W={w} t={t}: covers {span} s");
                assert!(10 * span > 7 * w, "W={w} t={t}: covers only {span} s");
            }
            if w <= 15 {
                assert_eq!((s, k), (1, w), "W={w}: exactly the mean's span");
            } else {
                assert!((5..=6).contains(&k), "W={w}: {k} sub-windows");
            }
        }
    }

    /// Against a naive reference (every sample with its second), with time moving
    /// forward by random steps and frames up to 3 s late, at random query times: the
    /// ring holds exactly the samples of the covered seconds, bucket by bucket.
    #[test]
    fn ring_equals_naive_reference_with_late_frames() {
        use proptest::prelude::*;
        let strategy = (
            prop_oneof![1u64..=20, 21u64..=130, Just(3600u64)],
            prop::collection::vec((0u64..4, 0u64..4, 1e-5f64..2.0, 0u8..8), 1..200),
        );
        let config = ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        };
        proptest!(config, |((window, steps) in strategy)| {
            let (s, _) = layout(window);
            let mut ring = QuantileRing::new(window);
            let mut samples: Vec<(u64, f64)> = Vec::new();
            let mut clock = 0u64;
            for (advance, late, x, query) in steps {
                clock += advance * s.min(3);
                let at = clock.saturating_sub(late);
                ring.record(at, x);
                samples.push((at, x));
                if query == 0 {
                    for t in [clock, clock + s, clock + window / 2] {
                        let mut got = Counts::default();
                        ring.merge_into(t, &mut got);
                        let mut want = new_histogram();
                        let start = cover_start(window, t);
                        for &(_, x) in samples.iter().filter(|p| p.0 >= start && p.0 <= t) {
                            want.record(to_micros(x)).unwrap();
                        }
                        let buckets = |h: &Histogram<u32>| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect::<Vec<_>>();
                        prop_assert_eq!(buckets(&got.to_histogram()), buckets(&want), "t={} sec", t);
                        prop_assert_eq!(got.quantiles(), quantiles_of(&want));
                    }
                }
            }
        });
    }

    /// 100 samples, then one frame stamped 2 s earlier: all 101 stay.
    #[test]
    fn a_late_frame_keeps_the_live_sub_window() {
        for window in [4, 10, 30, 60] {
            let mut ring = QuantileRing::new(window);
            for i in 0..100 {
                ring.record(20, 0.010 + i as f64 * 1e-4);
            }
            ring.record(18, 0.5);
            let mut h = Counts::default();
            ring.merge_into(20, &mut h);
            assert_eq!(h.len(), 101, "W={window}");
            assert!((h.quantiles()[3] - 0.5).abs() < 0.005);
        }
    }

    /// What an engine's aggregate does: windows of ranks with different ranges, merged
    /// into one set of counts, give hdrhistogram's quantiles (one at a time) of all
    /// their samples.
    #[test]
    fn merged_counts_give_hdrhistograms_quantiles() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for round in 0..50 {
            let mut engine = Counts::default();
            let mut h = new_histogram();
            for rank in 0..rng.gen_range(1..6) {
                let mut ring = QuantileRing::new(10);
                let (lo, hi) = match (round + rank) % 3 {
                    0 => (0.000_001, 0.000_300),
                    1 => (0.001, 0.9),
                    _ => (0.5, 90.0),
                };
                for _ in 0..rng.gen_range(0..400) {
                    let x = rng.gen_range(lo..hi);
                    ring.record(rng.gen_range(0..10), x);
                    h.record(to_micros(x)).unwrap();
                }
                let mut window = Counts::default();
                ring.merge_into(9, &mut window);
                engine.merge(&window);
            }
            assert_eq!(engine.len(), h.len());
            let got = engine.quantiles();
            for (i, (q, _)) in QUANTILES.iter().enumerate() {
                let want = match (h.is_empty(), *q >= 1.0) {
                    (true, _) => 0,
                    (false, true) => h.max(),
                    (false, false) => h.value_at_quantile(*q),
                };
                assert_eq!(got[i], want as f64 / 1e6, "round {round} q{q}");
            }
            engine.clear();
            assert_eq!(engine.quantiles(), [0.0; 4]);
        }
    }

    #[test]
    fn expired_sub_windows_are_not_merged() {
        let mut ring = QuantileRing::new(8); // sub-windows of 2 s
        ring.record(0, 5.0);
        ring.record(9, 0.010);
        let mut h = Counts::default();
        ring.merge_into(9, &mut h);
        assert_eq!(h.len(), 1, "second 0 is older than the window");
        assert!((h.quantiles()[3] - 0.010).abs() < 0.0001);
    }

    #[test]
    fn bucket_keys_are_hdrhistograms_buckets_in_order() {
        let h = new_histogram();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut values: Vec<u64> = (0..64)
            .flat_map(|b| [1u64 << b, (1u64 << b) - 1, (1u64 << b) + 1])
            .collect();
        values.extend((0..20_000).map(|_| rng.gen::<u64>() >> rng.gen_range(0..64)));
        values.extend([0, 1, 255, 256, u64::MAX, u64::MAX - 1]);
        values.sort_unstable();
        let mut prev = 0u16;
        for &v in &values {
            let key = bucket_key(v);
            let same = h.lowest_equivalent(bucket_value(key)) == h.lowest_equivalent(v);
            assert!(same, "v={v} is not in the bucket of its key");
            if v < u64::MAX - 1 {
                assert_eq!(bucket_value(key), h.highest_equivalent(v), "v={v}");
            }
            assert!(key >= prev, "keys follow values at v={v}");
            prev = key;
        }
    }

    #[test]
    fn an_idle_ring_costs_nothing_and_a_busy_one_stays_small() {
        let mut ring = QuantileRing::new(60);
        assert_eq!(ring.heap_bytes(), 0);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        // 100 iterations/s for 2 minutes, wall_time 5-60 ms.
        for sec in 0..120 {
            for _ in 0..100 {
                ring.record(sec, rng.gen_range(0.005..0.060));
            }
        }
        let mut h = Counts::default();
        ring.merge_into(119, &mut h);
        assert!(h.len() >= 4900, "{} samples in the window", h.len());
        // 5 sub-windows x ~430 of the ~460 buckets between 5 and 60 ms, 4 bytes each
        // (a dense live histogram alone was ~7.7 KB, its sparse copies 16 B a bucket).
        assert!(ring.heap_bytes() < 9 * 1024, "{} bytes", ring.heap_bytes());
        // One array for every sub-window, grown by quarters: no doubled spare half.
        let (len, cap) = (ring.buckets.len(), ring.buckets.capacity());
        assert!(
            cap <= len + len / 4 + 8,
            "{cap} buckets allocated for {len}"
        );
        assert_eq!(ring.runs.capacity(), 5);
    }

    #[test]
    fn a_bucket_past_65535_counts_loses_none() {
        let mut ring = QuantileRing::new(1);
        for _ in 0..140_000 {
            ring.record(0, 0.010);
        }
        ring.record(0, 0.020);
        let mut h = Counts::default();
        ring.merge_into(0, &mut h);
        assert_eq!(h.len(), 140_001);
        assert_eq!(h.to_histogram().count_at(to_micros(0.010)), 140_000);
        // The overflow leaves the window with its sub-window, and only then.
        let mut ring = QuantileRing::new(2);
        for _ in 0..70_000 {
            ring.record(5, 0.010);
        }
        ring.record(6, 0.020);
        let mut h = Counts::default();
        ring.merge_into(6, &mut h);
        assert_eq!(h.len(), 70_001);
        ring.record(7, 0.020);
        let mut h = Counts::default();
        ring.merge_into(7, &mut h);
        assert_eq!(h.len(), 2, "second 5 left the 2 s window");
        assert_eq!(ring.spill.len(), 0);
    }
}
