//! Non-negative least squares for the performance model's normal equations (at most
//! four unknowns): exact by enumerating supports, a few hundred flops per fit.

/// Non-negative least squares on the normal equations: minimises
/// `0.5 x'Ax - b'x` subject to `x >= 0` for the leading `m x m` block (m <= 4).
///
/// The optimum is the unconstrained optimum on its own support (the KKT conditions),
/// and with at most 4 unknowns there are at most 15 supports, so every one is solved
/// and the feasible solution with the lowest objective wins: exact, and a few hundred
/// flops. Variables are scaled to a unit diagonal first so that a token count (10^5)
/// and the intercept (1) are comparable and singular supports are detected reliably.
pub fn nnls(a: &[[f64; 4]; 4], b: &[f64; 4], m: usize) -> [f64; 4] {
    let mut scale = [0.0; 4];
    for i in 0..m {
        scale[i] = if a[i][i] > 0.0 {
            1.0 / a[i][i].sqrt()
        } else {
            0.0
        };
    }
    let mut best = [0.0; 4];
    let mut best_obj = 0.0; // the empty support: x = 0
    for mask in 1u32..(1 << m) {
        let idx: Vec<usize> = (0..m)
            .filter(|&i| mask & (1 << i) != 0 && scale[i] > 0.0)
            .collect();
        if idx.len() != mask.count_ones() as usize {
            continue;
        }
        let k = idx.len();
        let mut sa = [[0.0; 4]; 4];
        let mut sb = [0.0; 4];
        for (r, &i) in idx.iter().enumerate() {
            for (c, &j) in idx.iter().enumerate() {
                sa[r][c] = a[i][j] * scale[i] * scale[j];
            }
            sb[r] = b[i] * scale[i];
        }
        let Some(z) = solve(sa, sb, k) else { continue };
        if z[..k].iter().any(|&v| v < 0.0) {
            continue;
        }
        // At a stationary point of the support the objective is -0.5 b'z.
        let obj = -0.5 * (0..k).map(|r| sb[r] * z[r]).sum::<f64>();
        if obj < best_obj {
            best_obj = obj;
            best = [0.0; 4];
            for (r, &i) in idx.iter().enumerate() {
                best[i] = z[r] * scale[i];
            }
        }
    }
    best
}

/// Solves `a z = b` (k x k, unit-diagonal scale) by Gaussian elimination with partial
/// pivoting; `None` when the system is (numerically) singular.
pub(super) fn solve(mut a: [[f64; 4]; 4], mut b: [f64; 4], k: usize) -> Option<[f64; 4]> {
    for col in 0..k {
        let piv = (col..k).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[piv][col].abs() < 1e-10 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for r in col + 1..k {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[r][col..k].iter_mut().zip(&pivot_row[col..k]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut z = [0.0; 4];
    for r in (0..k).rev() {
        let tail: f64 = (r + 1..k).map(|c| a[r][c] * z[c]).sum();
        z[r] = (b[r] - tail) / a[r][r];
    }
    z[..k].iter().all(|v| v.is_finite()).then_some(z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn nnls_matches_kkt_on_random_problems() {
        // KKT for min 0.5x'Ax - b'x, x >= 0: x >= 0, g = Ax - b >= 0, x_i g_i = 0.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..300 {
            let m = rng.gen_range(1..=4);
            let rows: Vec<_> = (0..20)
                .map(|_| {
                    let mut x = [0.0; 4];
                    for v in x.iter_mut().take(m) {
                        *v = rng.gen_range(-1.0..1.0);
                    }
                    (x, rng.gen_range(-1.0..1.0))
                })
                .collect();
            let mut a = [[0.0; 4]; 4];
            let mut b = [0.0; 4];
            for (x, y) in &rows {
                for r in 0..m {
                    for c in 0..m {
                        a[r][c] += x[r] * x[c];
                    }
                    b[r] += x[r] * y;
                }
            }
            let x = nnls(&a, &b, m);
            for i in 0..m {
                let g: f64 = (0..m).map(|j| a[i][j] * x[j]).sum::<f64>() - b[i];
                assert!(x[i] >= 0.0);
                assert!(g >= -1e-9, "gradient {g} at {i}: {x:?}");
                assert!(
                    (x[i] * g).abs() < 1e-9,
                    "complementarity at {i}: {x:?} g {g}"
                );
            }
        }
    }
}
