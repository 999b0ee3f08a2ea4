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

/// The ring of sub-histograms for one window.
#[derive(Debug, Clone)]
pub struct QuantileRing {
    sub_secs: u64,
    /// (sub-window index + 1, histogram); the histogram is allocated on first use.
    slots: Vec<(u64, Option<Box<Histogram<u32>>>)>,
}

impl QuantileRing {
    /// A ring for a window of `window_secs` seconds.
    pub fn new(window_secs: u64) -> Self {
        QuantileRing {
            sub_secs: window_secs.div_ceil(SUB_WINDOWS).max(1),
            slots: (0..SUB_WINDOWS).map(|_| (0, None)).collect(),
        }
    }

    /// Records one wall_time (seconds) at second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, seconds: f64) {
        let idx = now_sec / self.sub_secs;
        let (tag, hist) = &mut self.slots[(idx % SUB_WINDOWS) as usize];
        let h = hist.get_or_insert_with(|| Box::new(new_histogram()));
        if *tag != idx + 1 {
            *tag = idx + 1;
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
        for (tag, hist) in &self.slots {
            if let Some(h) = hist {
                if *tag >= lowest && *tag <= idx + 1 && !h.is_empty() {
                    // Both sides auto-resize, so adding cannot fail on range.
                    let _ = out.add(h.as_ref());
                }
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
    for (o, (q, _)) in out.iter_mut().zip(QUANTILES) {
        let v = if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        };
        *o = v as f64 / 1e6;
    }
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
