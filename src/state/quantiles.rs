//! wall_time quantiles per window from `hdrhistogram`.
//!
//! A window of W seconds keeps sub-histograms of S = max(1, ⌊W/8⌋) seconds each; a
//! query merges the K = ⌊W/S⌋ newest (the live one included), so the quantiles cover
//! the last (K-1)·S+1 to K·S whole seconds: never more than W, always more than 3/4 W,
//! and exactly W (the span of the window's mean) for W ≤ 15. They slide in steps of S.
//! Values are recorded in microseconds with two significant digits (relative error at
//! most 1%).

use hdrhistogram::Histogram;

/// Significant digits kept by every histogram (1% relative precision).
pub const SIGFIG: u8 = 2;

/// The quantiles reported for every window, with their label values.
pub const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (1.0, "1")];

/// Creates an empty histogram with the project's precision (auto-resizing).
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

/// Sub-window length and how many sub-windows a query merges, for a W-second window.
pub fn layout(window_secs: u64) -> (u64, u64) {
    let w = window_secs.max(1);
    let sub = (w / 8).max(1);
    (sub, w / sub)
}

/// A completed sub-window kept sparse: (value, count) of its non-empty buckets only.
/// A rank's wall_time spans a narrow range, so this is a few hundred bytes where the
/// dense histogram is ~7 KB; it also merges faster (no walk over empty buckets).
#[derive(Debug, Clone)]
struct Sparse {
    /// Sub-window index + 1.
    tag: u64,
    /// Sorted by value. Each value is a bucket's highest equivalent value, so
    /// re-recording it lands in the same bucket of any histogram with the project's
    /// precision.
    buckets: Vec<(u64, u32)>,
}

impl Sparse {
    /// Adds one value (already a bucket's highest equivalent) to its bucket.
    fn add(&mut self, value: u64) {
        match self.buckets.binary_search_by_key(&value, |b| b.0) {
            Ok(i) => self.buckets[i].1 = self.buckets[i].1.saturating_add(1),
            Err(i) => self.buckets.insert(i, (value, 1)),
        }
    }
}

/// The ring of sub-histograms for one window: the live sub-window as a dense
/// histogram, the (up to K - 1) completed ones as sparse copies (non-empty buckets only).
#[derive(Debug, Clone)]
pub struct QuantileRing {
    sub_secs: u64,
    subs: u64,
    /// (sub-window index + 1, histogram) of the live sub-window; allocated on first use.
    current: (u64, Option<Box<Histogram<u32>>>),
    /// Completed sub-windows, oldest first.
    done: Vec<Sparse>,
}

impl QuantileRing {
    /// A ring for a window of `window_secs` seconds.
    pub fn new(window_secs: u64) -> Self {
        let (sub_secs, subs) = layout(window_secs);
        QuantileRing {
            sub_secs,
            subs,
            current: (0, None),
            done: Vec::new(),
        }
    }

    /// Records one wall_time (seconds) at second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, seconds: f64) {
        let tag = now_sec / self.sub_secs + 1;
        let v = to_micros(seconds);
        let (cur_tag, hist) = &mut self.current;
        let h = hist.get_or_insert_with(|| Box::new(new_histogram()));
        if tag < *cur_tag {
            // A late frame (its task read the clock before a sub-window turned): it
            // belongs to a completed sub-window, like a late second in the window ring.
            if tag + self.subs > *cur_tag {
                let value = h.highest_equivalent(v);
                let i = self.done.partition_point(|s| s.tag < tag);
                match self.done.get_mut(i) {
                    Some(s) if s.tag == tag => s.add(value),
                    _ => self.done.insert(
                        i,
                        Sparse {
                            tag,
                            buckets: vec![(value, 1)],
                        },
                    ),
                }
            }
            // Older than K sub-windows: outside every window from now on.
            return;
        }
        if tag > *cur_tag {
            if *cur_tag != 0 && !h.is_empty() {
                let buckets = h
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect();
                self.done.push(Sparse {
                    tag: *cur_tag,
                    buckets,
                });
            }
            // Only the K - 1 sub-windows before the live one can still be in a window.
            let keep_from = tag.saturating_sub(self.subs - 1);
            self.done.retain(|s| s.tag >= keep_from);
            *cur_tag = tag;
            h.reset();
        }
        // record() grows the range as needed; only a count at u32::MAX falls back to
        // saturating, so a value is never dropped.
        if h.record(v).is_err() {
            h.saturating_record(v);
        }
    }

    /// Adds the sub-histograms of the window ending at second `now_sec` into `out`.
    pub fn merge_into(&self, now_sec: u64, out: &mut Histogram<u32>) {
        let newest = now_sec / self.sub_secs + 1;
        let lowest = newest.saturating_sub(self.subs - 1);
        let live = |tag: u64| tag >= lowest && tag <= newest;
        for s in self.done.iter().filter(|s| live(s.tag)) {
            for &(v, n) in s.buckets.iter() {
                if out.record_n(v, n).is_err() {
                    out.saturating_record_n(v, n);
                }
            }
        }
        if let (tag, Some(h)) = &self.current {
            if live(*tag) && !h.is_empty() {
                // Both sides auto-resize, so adding cannot fail on range.
                let _ = out.add(h.as_ref());
            }
        }
    }
}

/// Quantiles of a merged histogram, in seconds, in [`QUANTILES`] order (zeros when empty).
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
        let mut h = new_histogram();
        ring.merge_into(3, &mut h);
        let got = quantiles_of(&h);
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
    fn span_is_between_three_quarters_and_all_of_the_window_for_every_allowed_w() {
        for w in 1..=3600u64 {
            let (s, k) = layout(w);
            for t in 10_000..10_000 + 2 * s {
                // Whole seconds covered, the current one included.
                let span = t - cover_start(w, t) + 1;
                assert!(span <= w, "W={w} t={t}: covers {span} s");
                assert!(4 * span > 3 * w, "W={w} t={t}: covers only {span} s");
            }
            assert!(k <= 15, "W={w}: {k} sub-windows");
            if w <= 15 {
                assert_eq!((s, k), (1, w), "W={w}: exactly the mean's span");
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
                        let mut got = new_histogram();
                        ring.merge_into(t, &mut got);
                        let mut want = new_histogram();
                        let start = cover_start(window, t);
                        for &(_, x) in samples.iter().filter(|p| p.0 >= start && p.0 <= t) {
                            want.record(to_micros(x)).unwrap();
                        }
                        let buckets = |h: &Histogram<u32>| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect::<Vec<_>>();
                        prop_assert_eq!(buckets(&got), buckets(&want), "t={} sec", t);
                        prop_assert_eq!(quantiles_of(&got), quantiles_of(&want));
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
            let mut h = new_histogram();
            ring.merge_into(20, &mut h);
            assert_eq!(h.len(), 101, "W={window}");
            assert!((quantiles_of(&h)[3] - 0.5).abs() < 0.005);
        }
    }

    #[test]
    fn single_pass_quantiles_equal_one_at_a_time() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        let mut h = new_histogram();
        for _ in 0..5000 {
            h.record(to_micros(rng.gen_range(0.001..0.9))).unwrap();
        }
        let got = quantiles_of(&h);
        for (i, (q, _)) in QUANTILES.iter().enumerate() {
            let want = if *q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(*q)
            };
            assert_eq!(got[i], want as f64 / 1e6, "q{q}");
        }
    }

    #[test]
    fn expired_sub_windows_are_not_merged() {
        let mut ring = QuantileRing::new(8); // sub-windows of 2 s
        ring.record(0, 5.0);
        ring.record(9, 0.010);
        let mut h = new_histogram();
        ring.merge_into(9, &mut h);
        assert_eq!(h.len(), 1, "second 0 is older than the window");
        assert!((quantiles_of(&h)[3] - 0.010).abs() < 0.0001);
    }
}
