//! Sliding time windows: a ring of Welford partials, one per sub-window.
//!
//! A window of W seconds keeps K partials of S seconds each, with (S, K) the layout of
//! [`super::quantiles::layout`]: S = 1 and K = W for W <= 15, so such a window slides
//! one second at a time and covers exactly W seconds; longer windows slide in steps
//! of S = ⌊W/5⌋ and cover between 7/10 W and W, the very span of their quantiles.
//! The ring is allocated on the first iteration, so an idle or heartbeat-only rank
//! pays nothing for it; one ring per configured window (10 s and 60 s hold 10 + 5
//! partials) costs a quarter of one ring of 60 one-second partials.

use super::fields::FIELD_COUNT;
use super::subwindows::SubWindows;
use super::welford::Moments;

/// Per-sub-window partials of all fields.
pub type FrameMoments = Moments<FIELD_COUNT>;

/// A ring of sub-window partials answering one window.
#[derive(Debug, Clone)]
pub struct WindowRing {
    window: u64,
    /// A query merges every partial (K <= 15): a cache of the completed sub-windows'
    /// merge would save a scrape about a millisecond per thousand ranks, and cost
    /// every busy rank 1 KiB.
    partials: SubWindows<FrameMoments>,
}

impl WindowRing {
    /// A ring for a window of `window_secs` seconds (nothing allocated yet).
    pub fn new(window_secs: u64) -> Self {
        let window = window_secs.max(1);
        WindowRing {
            window,
            partials: SubWindows::new(window),
        }
    }

    /// The window this ring answers, seconds.
    pub fn secs(&self) -> u64 {
        self.window
    }

    /// Folds one iteration's values into the partial of second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, values: &[f64; FIELD_COUNT]) {
        if let Some(partial) = self.partials.at(now_sec) {
            partial.push(values);
        }
    }

    /// Merges the partials of the window ending at second `now_sec` into `out`.
    pub fn merge_into(&self, now_sec: u64, out: &mut FrameMoments) {
        for partial in self.partials.window(now_sec) {
            out.merge(partial);
        }
    }

    /// Statistics of the window ending at second `now_sec`.
    pub fn window(&self, now_sec: u64) -> FrameMoments {
        let mut out = FrameMoments::default();
        self.merge_into(now_sec, &mut out);
        out
    }

    /// Heap bytes this ring holds (for the memory budget's tests).
    pub fn heap_bytes(&self) -> usize {
        self.partials.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::quantiles::layout;
    use proptest::prelude::*;

    fn vals(x: f64) -> [f64; FIELD_COUNT] {
        let mut v = [0.0; FIELD_COUNT];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = x * (i as f64 + 1.0);
        }
        v
    }

    /// Whether a sample of second `sec` is inside the window ending at `t`, from the
    /// documented rule alone (exactly the last W seconds for W <= 15).
    fn inside(window: u64, sec: u64, t: u64) -> bool {
        let (s, k) = layout(window);
        sec <= t && sec >= (t / s).saturating_sub(k - 1) * s
    }

    proptest! {
        /// The sliding window equals a naive two-pass mean/variance over exactly the
        /// samples whose second falls inside the window, at every query time.
        #[test]
        fn sliding_window_equals_naive_two_pass(
            samples in prop::collection::vec((0u64..200, 0.0f64..1e6), 1..600),
            window in 1u64..=60,
            query_at in 0u64..220,
        ) {
            let mut samples = samples;
            samples.sort_by_key(|s| s.0);
            let samples: Vec<_> = samples.into_iter().filter(|s| s.0 <= query_at).collect();
            let mut ring = WindowRing::new(window);
            for &(sec, x) in &samples {
                ring.record(sec, &vals(x));
            }
            let got = ring.window(query_at);
            let inside: Vec<f64> = samples
                .iter()
                .filter(|s| inside(window, s.0, query_at))
                .map(|s| s.1)
                .collect();
            if window <= 15 {
                let exact = samples.iter().filter(|s| s.0 + window > query_at).count();
                prop_assert_eq!(inside.len(), exact, "W <= 15 covers exactly W seconds");
            }
            prop_assert_eq!(got.count as usize, inside.len());
            if !inside.is_empty() {
                let n = inside.len() as f64;
                let mean = inside.iter().sum::<f64>() / n;
                let var = inside.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                for i in [0usize, 5, FIELD_COUNT - 1] {
                    let k = i as f64 + 1.0;
                    let s = got.summary(i);
                    prop_assert!((s.mean - mean * k).abs() <= 1e-9 * (mean * k).max(1.0));
                    prop_assert!((s.variance - var * k * k).abs() <= 1e-6 * (var * k * k).max(1.0));
                }
            }
        }
    }

    proptest! {
        /// With queries interleaved with records, including frames late by a second,
        /// every answer still equals the naive statistics of exactly the samples
        /// inside the window.
        #[test]
        fn windows_follow_interleaved_records(
            ops in prop::collection::vec((0u64..3, any::<bool>(), 0.0f64..1e4, any::<bool>()), 1..300),
            window in 1u64..=60,
        ) {
            let mut ring = WindowRing::new(window);
            let mut samples: Vec<(u64, f64)> = Vec::new();
            let mut sec = 0u64;
            for (advance, late, x, query) in ops {
                sec += advance;
                let at = if late { sec.saturating_sub(1) } else { sec };
                ring.record(at, &vals(x));
                samples.push((at, x));
                if query {
                    let got = ring.window(sec);
                    let inside: Vec<f64> = samples.iter().filter(|s| inside(window, s.0, sec)).map(|s| s.1).collect();
                    prop_assert_eq!(got.count as usize, inside.len());
                    if !inside.is_empty() {
                        let n = inside.len() as f64;
                        let mean = inside.iter().sum::<f64>() / n;
                        let var = inside.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                        let s = got.summary(0);
                        prop_assert!((s.mean - mean).abs() <= 1e-9 * mean.max(1.0));
                        prop_assert!((s.variance - var).abs() <= 1e-6 * var.max(1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let mut ring = WindowRing::new(10);
        ring.record(0, &vals(100.0));
        ring.record(5, &vals(1.0));
        assert_eq!(ring.window(5).count, 2);
        assert_eq!(ring.window(10).count, 1, "second 0 is outside (0, 10]");
        assert_eq!(ring.window(15).count, 0);
        // A slot reused after wrapping around forgets its old second.
        ring.record(20, &vals(7.0));
        let w = ring.window(20);
        assert_eq!(w.count, 1);
        assert_eq!(w.summary(0).mean, 7.0);
        // A frame 10 s late maps to the same slot: it must not wipe second 20.
        ring.record(10, &vals(1000.0));
        assert_eq!(ring.window(20).count, 1);
        assert_eq!(ring.window(20).summary(0).mean, 7.0);
    }

    #[test]
    fn a_ring_costs_nothing_until_its_first_iteration_and_little_after() {
        let mut ring = WindowRing::new(60);
        assert_eq!(ring.heap_bytes(), 0);
        assert_eq!(ring.window(100).count, 0);
        assert_eq!(
            ring.heap_bytes(),
            0,
            "a query allocates nothing on an empty ring"
        );
        for sec in 0..120 {
            ring.record(sec, &vals(sec as f64));
        }
        // 5 partials of 12 s for a 60 s window, where one-second slots took 60.
        assert_eq!(ring.heap_bytes(), 5 * 464);
    }
}
