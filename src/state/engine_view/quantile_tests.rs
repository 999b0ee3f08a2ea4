//! Hand-computed expectations for the port of Prometheus' `bucketQuantile`.

use super::*;

fn b(pairs: &[(f64, f64)]) -> Vec<Bucket> {
    pairs
        .iter()
        .map(|&(upper_bound, count)| Bucket { upper_bound, count })
        .collect()
}

fn q(q: f64, pairs: &[(f64, f64)]) -> f64 {
    bucket_quantile(q, &mut b(pairs))
}

const INF: f64 = f64::INFINITY;
const H: &[(f64, f64)] = &[(0.1, 2.0), (0.2, 6.0), (0.4, 8.0), (INF, 10.0)];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn interpolates_linearly_within_the_bucket_of_the_rank() {
    // rank 5 falls in (0.1, 0.2] holding 4 (2..6): 0.1 + 0.1 * 3/4.
    assert!(close(q(0.5, H), 0.175), "{}", q(0.5, H));
    // rank 8 is exactly the top of (0.2, 0.4].
    assert!(close(q(0.8, H), 0.4));
    // rank 7: 0.2 + 0.2 * 1/2.
    assert!(close(q(0.7, H), 0.3));
}

#[test]
fn lowest_bucket_interpolates_from_zero_when_its_bound_is_positive() {
    // rank 1 of 2 in (0, 0.1].
    assert!(close(q(0.1, H), 0.05));
    // A non-positive lowest bound is returned as is.
    let neg = &[(-1.0, 2.0), (0.0, 4.0), (INF, 4.0)];
    assert_eq!(q(0.25, neg), -1.0);
}

#[test]
fn a_rank_in_the_inf_bucket_returns_the_highest_finite_bound() {
    assert_eq!(q(0.9, H), 0.4);
    assert_eq!(q(0.99, H), 0.4);
    assert_eq!(q(1.0, H), 0.4);
}

#[test]
fn special_cases_follow_prometheus() {
    assert_eq!(q(-0.1, H), f64::NEG_INFINITY);
    assert_eq!(q(1.5, H), f64::INFINITY);
    assert!(q(f64::NAN, H).is_nan());
    // No +Inf bucket.
    assert!(q(0.5, &[(0.1, 1.0), (0.2, 2.0)]).is_nan());
    // No observations.
    assert!(q(0.5, &[(0.1, 0.0), (INF, 0.0)]).is_nan());
    // Fewer than two buckets.
    assert!(q(0.5, &[(INF, 3.0)]).is_nan());
    assert!(q(0.5, &[]).is_nan());
    // q = 0 with an empty lowest bucket: 0 * (0 / 0) is NaN in Go too.
    assert!(q(0.0, &[(0.1, 0.0), (0.2, 1.0), (INF, 1.0)]).is_nan());
}

#[test]
fn sorts_merges_equal_bounds_and_forces_monotonicity() {
    // Unsorted, and le=0.1 split over two entries (two series summed by le).
    let mixed = &[(INF, 10.0), (0.2, 6.0), (0.1, 1.0), (0.4, 8.0), (0.1, 1.0)];
    assert!(close(q(0.5, mixed), 0.175));
    // 0.2 below 0.1's count: raised to 3, so rank 2 of 4 falls in (0, 0.1].
    let bumpy = &[(0.1, 3.0), (0.2, 2.0), (INF, 4.0)];
    assert!(close(q(0.5, bumpy), 0.1 * 2.0 / 3.0));
    // Float noise (1e-13 relative) is not a real decrease.
    let noisy = &[(0.1, 1.0), (0.2, 3.0), (0.4, 3.0 - 3e-13), (INF, 4.0)];
    assert!(close(q(0.75, noisy), 0.2));
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

fn hist(stream: &str, counts: &[(&str, f64)]) -> Vec<Sample> {
    counts
        .iter()
        .map(|&(le, v)| sample("x_bucket", &[("is_streaming", stream), ("le", le)], v))
        .collect()
}

fn sorted(mut v: Vec<Bucket>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| {
        a.upper_bound
            .total_cmp(&b.upper_bound)
            .then(a.count.total_cmp(&b.count))
    });
    v.into_iter().map(|b| (b.upper_bound, b.count)).collect()
}

#[test]
fn increase_is_the_difference_per_series_and_bucket() {
    let before = hist("true", &[("0.1", 1.0), ("0.2", 3.0), ("+Inf", 4.0)]);
    let after = hist("true", &[("0.1", 2.0), ("0.2", 7.0), ("+Inf", 9.0)]);
    let p: Vec<&Sample> = before.iter().collect();
    let l: Vec<&Sample> = after.iter().collect();
    let inc = bucket_increase(&p, &l);
    assert_eq!(inc.resets, 0);
    assert_eq!(
        sorted(inc.buckets),
        vec![(0.1, 1.0), (0.2, 4.0), (INF, 5.0)]
    );
}

#[test]
fn a_decrease_is_a_reset_and_a_new_series_counts_from_zero() {
    let before = hist("true", &[("0.1", 5.0), ("0.2", 6.0), ("+Inf", 9.0)]);
    let mut after = hist("true", &[("0.1", 1.0), ("0.2", 2.0), ("+Inf", 2.0)]);
    after.extend(hist("false", &[("0.1", 0.0), ("0.2", 1.0), ("+Inf", 1.0)]));
    let p: Vec<&Sample> = before.iter().collect();
    let l: Vec<&Sample> = after.iter().collect();
    let inc = bucket_increase(&p, &l);
    assert_eq!(inc.resets, 1);
    assert_eq!(
        sorted(inc.buckets),
        vec![
            (0.1, 0.0),
            (0.1, 1.0),
            (0.2, 1.0),
            (0.2, 2.0),
            (INF, 1.0),
            (INF, 2.0)
        ]
    );
}

#[test]
fn changed_bounds_are_a_reset_and_bad_le_is_skipped() {
    let before = hist("true", &[("0.1", 1.0), ("+Inf", 4.0)]);
    let after = hist(
        "true",
        &[("0.1", 2.0), ("0.3", 5.0), ("+Inf", 6.0), ("bogus", 9.0)],
    );
    let p: Vec<&Sample> = before.iter().collect();
    let l: Vec<&Sample> = after.iter().collect();
    let inc = bucket_increase(&p, &l);
    assert_eq!(inc.resets, 1);
    assert_eq!(
        sorted(inc.buckets),
        vec![(0.1, 2.0), (0.3, 5.0), (INF, 6.0)]
    );
    assert_eq!(parse_le("1e+06"), Some(1e6));
    assert_eq!(parse_le("+Inf"), Some(INF));
    assert_eq!(parse_le("x"), None);
    assert_eq!(parse_le("NaN"), None);
}

#[test]
fn hostile_counts_never_give_negative_increases() {
    let before = hist("true", &[("0.1", 1.0), ("NaN", 1.0), ("+Inf", 4.0)]);
    let after = hist("true", &[("0.1", -7.0), ("NaN", 1.0), ("+Inf", 9.0)]);
    let p: Vec<&Sample> = before.iter().collect();
    let l: Vec<&Sample> = after.iter().collect();
    let inc = bucket_increase(&p, &l);
    assert_eq!(inc.resets, 1);
    assert_eq!(sorted(inc.buckets.clone()), vec![(0.1, 0.0), (INF, 9.0)]);
    // rank 4.5 of 9 beyond the only finite bucket: its bound.
    assert_eq!(bucket_quantile(0.5, &mut inc.buckets.clone()), 0.1);
}
