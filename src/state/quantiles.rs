//! wall_time quantiles per window from `hdrhistogram`.
//!
//! Each window keeps a ring of [`SUB_WINDOWS`] histograms, each covering W/4 seconds;
//! a query merges them, so the quantiles cover the last 3/4 W to W seconds and
//! slide in steps of W/4. Values are recorded in microseconds with two significant
//! digits (relative error at most 1%).

use hdrhistogram::Histogram;

/// Sub-histograms per window.
pub const SUB_WINDOWS: u64 = 4;

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

/// A completed sub-window kept sparse: (value, count) of its non-empty buckets only.
/// A rank's wall_time spans a narrow range, so this is a few hundred bytes where the
/// dense histogram is ~7 KB; it also merges faster (no walk over empty buckets).
#[derive(Debug, Clone)]
struct Sparse {
    /// Sub-window index + 1.
    tag: u64,
    /// Each value is a bucket's highest equivalent value, so re-recording it lands in
    /// the same bucket of any histogram with the project's precision.
    buckets: Box<[(u64, u32)]>,
}

/// The ring of sub-histograms for one window: the live sub-window as a dense
/// histogram, the (up to [`SUB_WINDOWS`] - 1) completed ones as [`Sparse`] copies.
#[derive(Debug, Clone)]
pub struct QuantileRing {
    sub_secs: u64,
    /// (sub-window index + 1, histogram) of the live sub-window; allocated on first use.
    current: (u64, Option<Box<Histogram<u32>>>),
    /// Completed sub-windows, oldest first.
    done: Vec<Sparse>,
}

impl QuantileRing {
    /// A ring for a window of `window_secs` seconds.
    pub fn new(window_secs: u64) -> Self {
        QuantileRing {
            sub_secs: window_secs.div_ceil(SUB_WINDOWS).max(1),
            current: (0, None),
            done: Vec::new(),
        }
    }

    /// Records one wall_time (seconds) at second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, seconds: f64) {
        let tag = now_sec / self.sub_secs + 1;
        let (cur_tag, hist) = &mut self.current;
        let h = hist.get_or_insert_with(|| Box::new(new_histogram()));
        if *cur_tag != tag {
            if *cur_tag != 0 && *cur_tag < tag && !h.is_empty() {
                let buckets = h
                    .iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect();
                // Only the last SUB_WINDOWS - 1 completed sub-windows can still be in a window.
                if self.done.len() == SUB_WINDOWS as usize - 1 {
                    self.done.remove(0);
                }
                self.done.push(Sparse {
                    tag: *cur_tag,
                    buckets,
                });
            }
            *cur_tag = tag;
            h.reset();
        }
        // record() grows the range as needed; only a count at u32::MAX falls back to
        // saturating, so a value is never dropped.
        let v = to_micros(seconds);
        if h.record(v).is_err() {
            h.saturating_record(v);
        }
    }

    /// Adds the live sub-histograms (those of the last W seconds) into `out`.
    pub fn merge_into(&self, now_sec: u64, out: &mut Histogram<u32>) {
        let idx = now_sec / self.sub_secs;
        let lowest = (idx + 1).saturating_sub(SUB_WINDOWS - 1);
        let live = |tag: u64| tag >= lowest && tag <= idx + 1;
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

    /// The sparse ring answers exactly what a ring of four dense histograms answers
    /// (bucket by bucket, so every quantile and the max too), whatever the pattern of
    /// gaps between frames and whenever it is queried.
    #[test]
    fn sparse_ring_equals_dense_reference() {
        use proptest::prelude::*;
        let strategy = (
            1u64..70,
            prop::collection::vec((0u64..6, 1e-5f64..2.0), 1..400),
            prop::collection::vec(0u64..8, 1..6),
        );
        proptest!(|((window, steps, query_lags) in strategy)| {
            let sub = window.div_ceil(SUB_WINDOWS).max(1);
            let mut ring = QuantileRing::new(window);
            let mut dense: Vec<(u64, Histogram<u32>)> = (0..SUB_WINDOWS).map(|_| (0, new_histogram())).collect();
            let mut sec = 0;
            for (advance, x) in steps {
                sec += advance;
                ring.record(sec, x);
                let idx = sec / sub;
                let (tag, h) = &mut dense[(idx % SUB_WINDOWS) as usize];
                if *tag != idx + 1 {
                    *tag = idx + 1;
                    h.reset();
                }
                h.record(to_micros(x)).unwrap();
            }
            for lag in query_lags {
                let at = sec + lag * sub;
                let mut got = new_histogram();
                ring.merge_into(at, &mut got);
                let mut want = new_histogram();
                let idx = at / sub;
                let lowest = (idx + 1).saturating_sub(SUB_WINDOWS - 1);
                for (tag, h) in &dense {
                    if *tag >= lowest && *tag <= idx + 1 {
                        want.add(h).unwrap();
                    }
                }
                let buckets = |h: &Histogram<u32>| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect::<Vec<_>>();
                prop_assert_eq!(buckets(&got), buckets(&want));
                prop_assert_eq!(quantiles_of(&got), quantiles_of(&want));
            }
        });
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
