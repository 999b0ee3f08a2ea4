//! Sliding time windows: a ring of one-second Welford partials.
//!
//! A window of W seconds is the merge of the partials of the current second and the
//! W-1 before it, so it slides one second at a time instead of resetting at a
//! boundary. One ring, as long as the longest window, serves every window.

use super::fields::FIELD_COUNT;
use super::welford::Moments;
use std::cell::RefCell;

/// Per-second partials of all fields.
pub type FrameMoments = Moments<FIELD_COUNT>;

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Which second (since the registry's epoch) this slot holds, plus one; 0 = never used.
    second: u64,
    moments: FrameMoments,
}

/// The merge of a window's completed seconds, as of one second.
#[derive(Debug, Clone)]
struct Completed {
    window: u64,
    now_sec: u64,
    moments: FrameMoments,
}

/// A ring of per-second partials covering the longest configured window.
#[derive(Debug, Clone)]
pub struct WindowRing {
    slots: Box<[Slot]>,
    /// Per queried window, the merge of its completed seconds: the seconds before the
    /// current one do not change, so a scrape merges two partials per window instead
    /// of up to 60 (1,024 ranks x 60 s x 14 fields was most of a scrape's cost).
    completed: RefCell<Vec<Completed>>,
}

impl WindowRing {
    /// A ring able to answer windows of up to `max_secs` seconds.
    pub fn new(max_secs: u64) -> Self {
        WindowRing {
            slots: vec![Slot::default(); max_secs.max(1) as usize].into_boxed_slice(),
            completed: RefCell::new(Vec::new()),
        }
    }

    /// Folds one iteration's values into the partial of second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, values: &[f64; FIELD_COUNT]) {
        // A frame for a second a cached merge counts as completed (a late one from a
        // task that read the clock just before the second turned) voids the cache.
        let completed = self.completed.get_mut();
        if completed.iter().any(|c| now_sec < c.now_sec) {
            completed.clear();
        }
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(now_sec % len) as usize];
        if slot.second > now_sec + 1 {
            // Older than the longest window behind data already recorded: it is in no
            // window any more, and taking the slot would wipe that newer second.
            return;
        }
        if slot.second != now_sec + 1 {
            slot.second = now_sec + 1;
            slot.moments.clear();
        }
        slot.moments.push(values);
    }

    /// Merges the partials of the last `window_secs` seconds (the current one included)
    /// into `out`.
    pub fn merge_window_into(&self, now_sec: u64, window_secs: u64, out: &mut FrameMoments) {
        let len = self.slots.len() as u64;
        let window = window_secs.min(len);
        let mut completed = self.completed.borrow_mut();
        let i = match completed.iter().position(|c| c.window == window) {
            Some(i) => i,
            None => {
                completed.push(Completed {
                    window,
                    now_sec: u64::MAX,
                    moments: FrameMoments::default(),
                });
                completed.len() - 1
            }
        };
        let c = &mut completed[i];
        if c.now_sec != now_sec {
            // Completed seconds in (now - window, now - 1], stored as second + 1.
            let lowest = (now_sec + 1).saturating_sub(window - 1);
            c.moments = FrameMoments::default();
            for slot in self.slots.iter() {
                if slot.second >= lowest && slot.second <= now_sec {
                    c.moments.merge(&slot.moments);
                }
            }
            c.now_sec = now_sec;
        }
        out.merge(&c.moments);
        let current = &self.slots[(now_sec % len) as usize];
        if current.second == now_sec + 1 {
            out.merge(&current.moments);
        }
    }

    /// Statistics of the last `window_secs` seconds.
    pub fn window(&self, now_sec: u64, window_secs: u64) -> FrameMoments {
        let mut out = FrameMoments::default();
        self.merge_window_into(now_sec, window_secs, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vals(x: f64) -> [f64; FIELD_COUNT] {
        let mut v = [0.0; FIELD_COUNT];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = x * (i as f64 + 1.0);
        }
        v
    }

    proptest! {
        /// The sliding window equals a naive two-pass mean/variance over exactly the
        /// samples whose second falls inside the window, at every query time.
        #[test]
        fn sliding_window_equals_naive_two_pass(
            samples in prop::collection::vec((0u64..200, 0.0f64..1e6), 1..600),
            window in 1u64..60,
            query_at in 0u64..220,
        ) {
            let mut samples = samples;
            samples.sort_by_key(|s| s.0);
            let samples: Vec<_> = samples.into_iter().filter(|s| s.0 <= query_at).collect();
            let mut ring = WindowRing::new(60);
            for &(sec, x) in &samples {
                ring.record(sec, &vals(x));
            }
            let got = ring.window(query_at, window);
            let inside: Vec<f64> = samples
                .iter()
                .filter(|s| s.0 + window > query_at)
                .map(|s| s.1)
                .collect();
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
        /// With queries interleaved with records (so merges of completed seconds are
        /// cached and reused), including frames late by a second, every answer still
        /// equals the naive statistics of exactly the samples inside the window.
        #[test]
        fn cached_windows_follow_interleaved_records(
            ops in prop::collection::vec((0u64..3, any::<bool>(), 0.0f64..1e4, any::<bool>()), 1..300),
            window in 1u64..60,
        ) {
            let mut ring = WindowRing::new(60);
            let mut samples: Vec<(u64, f64)> = Vec::new();
            let mut sec = 0u64;
            for (advance, late, x, query) in ops {
                sec += advance;
                let at = if late { sec.saturating_sub(1) } else { sec };
                ring.record(at, &vals(x));
                samples.push((at, x));
                if query {
                    let got = ring.window(sec, window);
                    let inside: Vec<f64> = samples.iter().filter(|s| s.0 + window > sec).map(|s| s.1).collect();
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
        assert_eq!(ring.window(5, 10).count, 2);
        assert_eq!(ring.window(10, 10).count, 1, "second 0 is outside (0, 10]");
        assert_eq!(ring.window(15, 10).count, 0);
        // A slot reused after wrapping around forgets its old second.
        ring.record(20, &vals(7.0));
        let w = ring.window(20, 10);
        assert_eq!(w.count, 1);
        assert_eq!(w.summary(0).mean, 7.0);
        // A frame 10 s late maps to the same slot: it must not wipe second 20.
        ring.record(10, &vals(1000.0));
        assert_eq!(ring.window(20, 10).count, 1);
        assert_eq!(ring.window(20, 10).summary(0).mean, 7.0);
    }
}
