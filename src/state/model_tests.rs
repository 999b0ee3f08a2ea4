use super::*;
use crate::state::nnls::solve;
use crate::wire::{Count, Real};
use rand::{Rng, SeedableRng};

fn sums_of(rows: &[([f64; 4], f64)]) -> NormalSums {
    let mut s = NormalSums::default();
    for (x, y) in rows {
        s.push(x, *y);
    }
    s
}

/// Plain least squares on the given terms by brute force (no constraint), for
/// comparison: the same normal equations solved in full precision.
fn ols(rows: &[([f64; 4], f64)], terms: &[usize]) -> Vec<f64> {
    let m = terms.len();
    let mut a = [[0.0; 4]; 4];
    let mut b = [0.0; 4];
    for (x, y) in rows {
        for r in 0..m {
            for c in 0..m {
                a[r][c] += x[terms[r]] * x[terms[c]];
            }
            b[r] += x[terms[r]] * y;
        }
    }
    solve(a, b, m).unwrap()[..m].to_vec()
}

#[test]
fn recovers_an_exact_linear_model() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let truth = [0.004, 25e-6, 60e-6, 40e-9];
    let rows: Vec<_> = (0..500)
        .map(|_| {
            let x = [
                1.0,
                rng.gen_range(0.0..4096.0),
                rng.gen_range(0.0..256.0),
                rng.gen_range(0.0..4.0e5),
            ];
            (x, truth.iter().zip(&x).map(|(b, x)| b * x).sum())
        })
        .collect();
    let fit = sums_of(&rows).fit(ModelKind::Aggregated);
    let c = fit.coefficients.unwrap();
    for (got, want) in c.iter().zip(truth) {
        assert!((got - want).abs() <= 1e-9 * want.max(1e-6), "{c:?}");
    }
    assert!(fit.r_squared.unwrap() > 0.999_999);
    assert_eq!(fit.samples, 500);
}

#[test]
fn a_coefficient_ols_makes_negative_is_clamped_to_zero() {
    // y falls with p: plain least squares gives a negative slope.
    let rows: Vec<_> = (0..50)
        .map(|i| ([1.0, i as f64, 0.0, 0.0], 10.0 - 0.1 * i as f64))
        .collect();
    let unconstrained = ols(&rows, &[0, 1]);
    assert!(
        unconstrained[1] < 0.0,
        "the case must need the constraint: {unconstrained:?}"
    );
    let fit = sums_of(&rows).fit(ModelKind::Prefill);
    let c = fit.coefficients.unwrap();
    assert_eq!(c[1], 0.0);
    // With the slope at 0 the best intercept is the mean of y.
    let mean = rows.iter().map(|r| r.1).sum::<f64>() / 50.0;
    assert!((c[0] - mean).abs() < 1e-9, "{c:?} vs mean {mean}");
    assert!(
        fit.r_squared.unwrap() < 1e-9,
        "the intercept alone explains nothing"
    );
}

#[test]
fn too_few_samples_or_collinear_terms_do_not_break_the_fit() {
    let one = sums_of(&[([1.0, 5.0, 0.0, 0.0], 1.0)]);
    assert_eq!(one.fit(ModelKind::Prefill).coefficients, None);
    // decode_kv_tokens = 1000 * decode_requests exactly: still a valid, exact fit.
    let rows: Vec<_> = (1..40)
        .map(|i| {
            (
                [1.0, 0.0, i as f64, 1000.0 * i as f64],
                0.002 + 0.001 * i as f64,
            )
        })
        .collect();
    let fit = sums_of(&rows).fit(ModelKind::Decode);
    let c = fit.coefficients.unwrap();
    for (i, row) in rows.iter().enumerate() {
        let p = fit.predict(&row.0).unwrap();
        assert!(
            (p - row.1).abs() < 1e-9,
            "row {i}: {p} vs {} ({c:?})",
            row.1
        );
    }
    assert!(c.iter().all(|&v| v >= 0.0));
}

#[test]
fn frames_go_to_the_models_they_belong_to_and_the_window_slides() {
    let frame = |p: u64, d: u64, k: u64, w: f64| ForwardPassMetrics {
        version: 1,
        wall_time: Real(w),
        scheduled_requests: crate::wire::ScheduledRequests {
            sum_prefill_tokens: Count(p),
            num_decode_requests: Count(d),
            sum_decode_kv_tokens: Count(k),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut ring = ModelRing::new(10);
    ring.record(0, &frame(100, 0, 0, 0.01));
    ring.record(1, &frame(0, 4, 400, 0.02));
    ring.record(1, &frame(100, 4, 400, 0.03));
    let mut s = ModelSums::default();
    ring.merge_into(1, &mut s);
    assert_eq!(
        (s.prefill.count(), s.decode.count(), s.aggregated.count()),
        (1, 1, 3)
    );
    let mut later = ModelSums::default();
    ring.merge_into(10, &mut later);
    assert_eq!(later.aggregated.count(), 2, "second 0 left the 10 s window");
    let mut gone = ModelSums::default();
    ring.merge_into(11, &mut gone);
    assert_eq!(gone.aggregated.count(), 0);
}

/// The ring keeps only the sums its fits read: every fit of its merge, the sample
/// counts and the coefficients, is bit for bit the fit of the full sums of the same
/// frames (pushed in the same order, one sub-window after the other).
#[test]
fn packed_ring_fits_equal_full_sums_bit_for_bit() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let mut ring = ModelRing::new(60);
    let (sub, k) = crate::state::quantiles::layout(60);
    let mut per_sub: Vec<ModelSums> = vec![ModelSums::default(); k as usize];
    for sec in 0..sub * k {
        for _ in 0..rng.gen_range(0..30) {
            let p = if rng.gen_bool(0.3) {
                rng.gen_range(1..8192)
            } else {
                0
            };
            let d = if rng.gen_bool(0.7) {
                rng.gen_range(1..256)
            } else {
                0
            };
            // Stray KV tokens without decode requests, too: kept out of no fit.
            let k = if d > 0 || rng.gen_bool(0.1) {
                rng.gen_range(0..4_000_000)
            } else {
                0
            };
            let mut m = ForwardPassMetrics {
                wall_time: Real(rng.gen_range(0.001..0.5)),
                ..Default::default()
            };
            m.scheduled_requests.sum_prefill_tokens = Count(p);
            m.scheduled_requests.num_decode_requests = Count(d);
            m.scheduled_requests.sum_decode_kv_tokens = Count(k);
            ring.record(sec, &m);
            per_sub[(sec / sub) as usize].push(&m);
        }
    }
    let mut got = ModelSums::default();
    ring.merge_into(sub * k - 1, &mut got);
    // merge_into visits the slots in ring order: sub-window tag % K.
    let mut want = ModelSums::default();
    for slot in 0..k {
        let i = (0..k).find(|i| (i + 1) % k == slot).unwrap();
        want.merge(&per_sub[i as usize]);
    }
    for kind in ModelKind::ALL {
        assert_eq!(
            got.get(kind).fit(kind),
            want.get(kind).fit(kind),
            "{kind:?}"
        );
        assert_eq!(got.get(kind).count(), want.get(kind).count());
    }
    assert!(want.aggregated.count() > 500);
    // 5 sub-windows of 12 s, 31 sums each, where full sums took 45.
    assert_eq!(k, 5);
    assert_eq!(ring.heap_bytes(), 5 * (8 + 31 * 8));
}
