//! The online performance model: the linear regressions of iteration `wall_time` that
//! Dynamo's planner fits, kept live per rank and per engine.
//!
//! - prefill: `wall_time ~ 1 + sum_prefill_tokens`, over pure-prefill iterations
//!   (prefill tokens computed, no decode request scheduled);
//! - decode: `wall_time ~ 1 + num_decode_requests + sum_decode_kv_tokens`, over
//!   pure-decode iterations (decode requests, no prefill token);
//! - aggregated: `wall_time ~ 1 + all three`, over every iteration.
//!
//! Heartbeats never enter. The fit is windowed normal equations: each second of a
//! ring (as long as the longest configured window) holds the sums of `x x^T`,
//! `x y` and `y^2` of its iterations, so an update is a handful of multiply-adds and
//! the window slides one second at a time. Sums add, so an engine's model is the sum
//! of its ranks' sums. The small non-negative least-squares problem (at most four
//! unknowns, [`super::nnls`]) is solved only when someone reads the model.

use super::nnls::nnls;
use super::subwindows::SubWindows;
use crate::wire::ForwardPassMetrics;

/// Term names, in the order of the regressor vector `x = [1, p, d, k]`.
pub const TERMS: [&str; 4] = [
    "intercept",
    "prefill_tokens",
    "decode_requests",
    "decode_kv_tokens",
];

/// Index of `(i, j)`, `i <= j`, in the packed upper triangle of a 4x4 matrix.
const TRI: [[usize; 4]; 4] = [[0, 1, 2, 3], [1, 4, 5, 6], [2, 5, 7, 8], [3, 6, 8, 9]];

/// Which regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// wall_time on prefill tokens.
    Prefill,
    /// wall_time on decode requests and decode KV tokens.
    Decode,
    /// wall_time on all three.
    Aggregated,
}

impl ModelKind {
    /// Every model, in output order.
    pub const ALL: [ModelKind; 3] = [ModelKind::Prefill, ModelKind::Decode, ModelKind::Aggregated];

    /// The `model` label value and JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Prefill => "prefill",
            ModelKind::Decode => "decode",
            ModelKind::Aggregated => "aggregated",
        }
    }

    /// Indexes into [`TERMS`] of the model's terms.
    pub fn terms(self) -> &'static [usize] {
        match self {
            ModelKind::Prefill => &[0, 1],
            ModelKind::Decode => &[0, 2, 3],
            ModelKind::Aggregated => &[0, 1, 2, 3],
        }
    }
}

/// Sufficient statistics of a least-squares fit on `x = [1, p, d, k]`: the packed
/// upper triangle of `sum x x^T` (its first entry is the sample count), `sum x y`
/// and `sum y^2`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NormalSums {
    /// Packed upper triangle of `sum x x^T`.
    pub xx: [f64; 10],
    /// `sum x y`.
    pub xy: [f64; 4],
    /// `sum y^2`.
    pub yy: f64,
}

impl NormalSums {
    /// Folds in one sample.
    #[inline]
    pub fn push(&mut self, x: &[f64; 4], y: f64) {
        for i in 0..4 {
            for j in i..4 {
                self.xx[TRI[i][j]] += x[i] * x[j];
            }
            self.xy[i] += x[i] * y;
        }
        self.yy += y * y;
    }

    /// Adds another set of sums (another second, or another rank).
    #[inline]
    pub fn merge(&mut self, o: &NormalSums) {
        for (a, b) in self.xx.iter_mut().zip(&o.xx) {
            *a += b;
        }
        for (a, b) in self.xy.iter_mut().zip(&o.xy) {
            *a += b;
        }
        self.yy += o.yy;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.xx[0].round() as u64
    }

    /// Fits `kind`'s terms with non-negative coefficients.
    pub fn fit(&self, kind: ModelKind) -> Fit {
        fit_terms(self, kind.terms())
    }
}

/// The regressors `x = [1, p, d, k]` and the response `y` (wall_time) of a frame.
#[inline]
fn regressors(m: &ForwardPassMetrics) -> ([f64; 4], f64) {
    let s = &m.scheduled_requests;
    let x = [
        1.0,
        s.sum_prefill_tokens.0 as f64,
        s.num_decode_requests.0 as f64,
        s.sum_decode_kv_tokens.0 as f64,
    ];
    (x, m.wall_time.0)
}

/// Which pure model a frame's regressors also feed: prefill tokens and no decode
/// requests, or the reverse (every frame feeds the aggregated one).
#[inline]
fn pure_kind(x: &[f64; 4]) -> Option<ModelKind> {
    if x[1] > 0.0 && x[2] == 0.0 {
        Some(ModelKind::Prefill)
    } else if x[2] > 0.0 && x[1] == 0.0 {
        Some(ModelKind::Decode)
    } else {
        None
    }
}

/// The sums of all three models over the same stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelSums {
    /// Pure-prefill iterations.
    pub prefill: NormalSums,
    /// Pure-decode iterations.
    pub decode: NormalSums,
    /// Every iteration.
    pub aggregated: NormalSums,
}

impl ModelSums {
    /// Folds in one iteration frame (the caller keeps heartbeats out).
    #[inline]
    pub fn push(&mut self, m: &ForwardPassMetrics) {
        let (x, y) = regressors(m);
        self.aggregated.push(&x, y);
        match pure_kind(&x) {
            Some(ModelKind::Prefill) => self.prefill.push(&x, y),
            Some(ModelKind::Decode) => self.decode.push(&x, y),
            _ => {}
        }
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, o: &ModelSums) {
        self.prefill.merge(&o.prefill);
        self.decode.merge(&o.decode);
        self.aggregated.merge(&o.aggregated);
    }

    /// The sums of one model.
    pub fn get(&self, kind: ModelKind) -> &NormalSums {
        match kind {
            ModelKind::Prefill => &self.prefill,
            ModelKind::Decode => &self.decode,
            ModelKind::Aggregated => &self.aggregated,
        }
    }
}

/// The entries of [`NormalSums`] a fit on `terms` reads, packed: the upper triangle of
/// `x x^T` over the terms, `x y` over the terms, `y^2`. Summed with the very products
/// [`NormalSums::push`] adds, so a fit on the expanded sums is bit for bit the same.
#[derive(Debug, Clone, Copy)]
struct PackedSums<const N: usize>([f64; N]);

impl<const N: usize> Default for PackedSums<N> {
    fn default() -> Self {
        PackedSums([0.0; N])
    }
}

impl<const N: usize> PackedSums<N> {
    #[inline]
    fn push(&mut self, terms: &[usize], x: &[f64; 4], y: f64) {
        let mut k = 0;
        for (r, &i) in terms.iter().enumerate() {
            for &j in &terms[r..] {
                self.0[k] += x[i] * x[j];
                k += 1;
            }
        }
        for &i in terms {
            self.0[k] += x[i] * y;
            k += 1;
        }
        self.0[k] += y * y;
    }

    /// Adds these entries into the full sums (the others are never read by the fit).
    fn add_to(&self, terms: &[usize], out: &mut NormalSums) {
        let mut k = 0;
        for (r, &i) in terms.iter().enumerate() {
            for &j in &terms[r..] {
                out.xx[TRI[i][j]] += self.0[k];
                k += 1;
            }
        }
        for &i in terms {
            out.xy[i] += self.0[k];
            k += 1;
        }
        out.yy += self.0[k];
    }
}

/// One sub-window of the ring: the prefill and decode regressions keep only what their
/// fits read (6 and 10 of 15 values), which is 30% of a busy rank's model ring.
#[derive(Debug, Clone, Default)]
struct Slot {
    prefill: PackedSums<6>,
    decode: PackedSums<10>,
    aggregated: NormalSums,
}

impl Slot {
    /// [`ModelSums::push`], into the packed sums.
    #[inline]
    fn push(&mut self, m: &ForwardPassMetrics) {
        let (x, y) = regressors(m);
        self.aggregated.push(&x, y);
        match pure_kind(&x) {
            Some(kind @ ModelKind::Prefill) => self.prefill.push(kind.terms(), &x, y),
            Some(kind @ ModelKind::Decode) => self.decode.push(kind.terms(), &x, y),
            _ => {}
        }
    }

    fn add_to(&self, out: &mut ModelSums) {
        self.prefill
            .add_to(ModelKind::Prefill.terms(), &mut out.prefill);
        self.decode
            .add_to(ModelKind::Decode.terms(), &mut out.decode);
        out.aggregated.merge(&self.aggregated);
    }
}

/// A ring of [`ModelSums`] per sub-window, laid out like the statistics windows
/// ([`super::quantiles::layout`]): exact seconds up to 15 s, 5 or 6 partials above.
/// Allocated on the first iteration, so idle ranks pay nothing.
#[derive(Debug, Clone)]
pub struct ModelRing {
    slots: SubWindows<Slot>,
}

impl ModelRing {
    /// A ring covering `secs` seconds.
    pub fn new(secs: u64) -> Self {
        ModelRing {
            slots: SubWindows::new(secs),
        }
    }

    /// Folds one iteration into second `now_sec`.
    #[inline]
    pub fn record(&mut self, now_sec: u64, m: &ForwardPassMetrics) {
        if let Some(slot) = self.slots.at(now_sec) {
            slot.push(m);
        }
    }

    /// Adds the sums of the whole window ending at `now_sec` into `out`.
    pub fn merge_into(&self, now_sec: u64, out: &mut ModelSums) {
        for slot in self.slots.window(now_sec) {
            slot.add_to(out);
        }
    }

    /// Heap bytes this ring holds (for the memory budget's tests).
    pub fn heap_bytes(&self) -> usize {
        self.slots.heap_bytes()
    }
}

/// One fitted regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Iterations the fit is based on.
    pub samples: u64,
    /// Coefficients in [`TERMS`] order (0 for terms the model does not have); `None`
    /// until there are more samples than terms.
    pub coefficients: Option<[f64; 4]>,
    /// Coefficient of determination; `None` without a fit or when wall_time did not vary.
    pub r_squared: Option<f64>,
}

impl Fit {
    /// Predicted wall_time, seconds, for `x = [1, p, d, k]`.
    pub fn predict(&self, x: &[f64; 4]) -> Option<f64> {
        self.coefficients
            .map(|b| b.iter().zip(x).map(|(b, x)| b * x).sum())
    }
}

fn fit_terms(s: &NormalSums, terms: &[usize]) -> Fit {
    let samples = s.count();
    let m = terms.len();
    if samples as usize <= m {
        return Fit {
            samples,
            coefficients: None,
            r_squared: None,
        };
    }
    let mut a = [[0.0; 4]; 4];
    let mut b = [0.0; 4];
    for (r, &i) in terms.iter().enumerate() {
        for (c, &j) in terms.iter().enumerate() {
            a[r][c] = s.xx[TRI[i.min(j)][i.max(j)]];
        }
        b[r] = s.xy[i];
    }
    let beta = nnls(&a, &b, m);
    let mut coefficients = [0.0; 4];
    for (r, &i) in terms.iter().enumerate() {
        coefficients[i] = beta[r];
    }
    // SSE = yy - 2 beta.b + beta' A beta; SST = yy - (sum y)^2 / n.
    let mut quad = 0.0;
    let mut lin = 0.0;
    for r in 0..m {
        lin += beta[r] * b[r];
        for c in 0..m {
            quad += beta[r] * a[r][c] * beta[c];
        }
    }
    let n = s.xx[0];
    let sse = (s.yy - 2.0 * lin + quad).max(0.0);
    let sst = s.yy - s.xy[0] * s.xy[0] / n;
    let r_squared =
        (sst > 1e-12 * s.yy.max(f64::MIN_POSITIVE)).then(|| (1.0 - sse / sst).clamp(0.0, 1.0));
    Fit {
        samples,
        coefficients: Some(coefficients),
        r_squared,
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
