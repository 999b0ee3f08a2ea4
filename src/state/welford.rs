//! Welford's online mean/variance, and the parallel combination (Chan et al.) that
//! merges partial results: it is what lets a window slide one second at a time and
//! what builds an engine's all-ranks aggregate from its ranks.

/// Running moments of one field: mean, M2 (sum of squared deviations), min, max.
/// The sample count lives beside it, shared by all fields of one [`Moments`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldMoments {
    /// Running mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest value seen.
    pub min: f64,
    /// Largest value seen.
    pub max: f64,
}

impl Default for FieldMoments {
    fn default() -> Self {
        FieldMoments {
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// Moments of N fields over the same samples (every iteration carries every field).
#[derive(Debug, Clone, PartialEq)]
pub struct Moments<const N: usize> {
    /// Number of samples folded in.
    pub count: u64,
    /// Per-field moments, in [`super::fields::FIELDS`] order.
    pub fields: [FieldMoments; N],
}

impl<const N: usize> Default for Moments<N> {
    fn default() -> Self {
        Moments {
            count: 0,
            fields: [FieldMoments::default(); N],
        }
    }
}

impl<const N: usize> Moments<N> {
    /// Folds in one sample (Welford's update).
    #[inline]
    pub fn push(&mut self, values: &[f64; N]) {
        self.count += 1;
        let n = self.count as f64;
        for (f, &x) in self.fields.iter_mut().zip(values) {
            let delta = x - f.mean;
            f.mean += delta / n;
            f.m2 += delta * (x - f.mean);
            f.min = f.min.min(x);
            f.max = f.max.max(x);
        }
    }

    /// Merges another partial result into this one (parallel combination).
    #[inline]
    pub fn merge(&mut self, other: &Moments<N>) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let na = self.count as f64;
        let nb = other.count as f64;
        // One division per merge, not two per field: a scrape merges every window's
        // sub-windows of every rank, and the weights are the same for all fields.
        let wb = nb / (na + nb);
        let wab = na * wb;
        for (a, b) in self.fields.iter_mut().zip(&other.fields) {
            let delta = b.mean - a.mean;
            a.mean += delta * wb;
            a.m2 += b.m2 + delta * delta * wab;
            a.min = a.min.min(b.min);
            a.max = a.max.max(b.max);
        }
        self.count += other.count;
    }

    /// Resets to the empty state without reallocating.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Summary of field `i`: mean, population variance, min, max (all 0 when empty).
    pub fn summary(&self, i: usize) -> FieldSummary {
        if self.count == 0 {
            return FieldSummary::default();
        }
        let f = &self.fields[i];
        FieldSummary {
            mean: f.mean,
            // Rounding can leave M2 a hair below zero for constant inputs.
            variance: (f.m2 / self.count as f64).max(0.0),
            min: f.min,
            max: f.max,
        }
    }
}

/// Finished statistics of one field over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FieldSummary {
    /// Arithmetic mean.
    pub mean: f64,
    /// Population variance (divided by n, as the engines compute theirs).
    pub variance: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        (mean, var)
    }

    proptest! {
        #[test]
        fn merge_of_partials_equals_two_pass(
            xs in prop::collection::vec(0.0f64..1e7, 1..400),
            cuts in prop::collection::vec(0usize..400, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % xs.len()).collect();
            cuts.sort_unstable();
            let mut total = Moments::<1>::default();
            let mut part = Moments::<1>::default();
            for (i, &x) in xs.iter().enumerate() {
                if cuts.contains(&i) {
                    total.merge(&part);
                    part.clear();
                }
                part.push(&[x]);
            }
            total.merge(&part);
            let (mean, var) = naive(&xs);
            let s = total.summary(0);
            prop_assert_eq!(total.count as usize, xs.len());
            prop_assert!((s.mean - mean).abs() <= 1e-9 * mean.abs().max(1.0));
            prop_assert!((s.variance - var).abs() <= 1e-7 * var.max(1.0));
            prop_assert_eq!(s.min, xs.iter().cloned().fold(f64::INFINITY, f64::min));
            prop_assert_eq!(s.max, xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        }
    }

    #[test]
    fn empty_summary_is_zero_not_infinite() {
        let m = Moments::<2>::default();
        assert_eq!(m.summary(1), FieldSummary::default());
    }
}
