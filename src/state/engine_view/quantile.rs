//! `histogram_quantile` as Prometheus computes it over classic (`le`) buckets, and
//! the bucket increase between two scrapes it is applied to.
//!
//! Ported from `bucketQuantile`, `coalesceBuckets`, `correctPrecisionErrors` and
//! `ensureMonotonic` in Prometheus' `promql/quantile.go` (prometheus/prometheus at
//! commit 01381a80, the v2.5x line; the algorithm is unchanged since v2.40 except
//! the 1e-12 precision correction, which only moves counts that differ by float
//! rounding). Every special case below is Prometheus', not ours.

use crate::wire::exposition::Sample;
use std::collections::HashMap;

/// One classic bucket: its upper bound (`le`) and cumulative count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The `le` label, parsed (`+Inf` for the last bucket).
    pub upper_bound: f64,
    /// Observations at or below `upper_bound` (cumulative).
    pub count: f64,
}

/// Prometheus' `bucketQuantile`: the `q`-quantile of cumulative `buckets` (sorted here).
///
/// NaN when q is NaN, when the highest bucket is not `+Inf`, when fewer than two
/// buckets remain after merging equal bounds, or when there are no observations;
/// -Inf for q < 0 and +Inf for q > 1. Linear interpolation within the bucket the
/// rank falls in, from 0 in the lowest bucket when its bound is positive (its bound
/// itself when it is <= 0); a rank in the `+Inf` bucket returns the highest finite
/// bound.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if buckets.is_empty() {
        return f64::NAN;
    }
    // Go's SortFunc with a NaN bound compares equal; total_cmp keeps the sort total.
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    if buckets[buckets.len() - 1].upper_bound != f64::INFINITY {
        return f64::NAN;
    }
    coalesce(buckets);
    correct_precision_errors(buckets, 1e-12);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over all but the +Inf bucket: the first whose count reaches rank.
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.count < rank);
    if b == n {
        return buckets[n - 1].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Merges buckets with the same upper bound (input sorted), adding their counts.
fn coalesce(buckets: &mut Vec<Bucket>) {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(*b),
        }
    }
    *buckets = out;
}

/// Counts that differ from the previous bucket's by a relative `tolerance` or less
/// are float noise: set them equal, so noise never reads as non-monotonic.
fn correct_precision_errors(buckets: &mut [Bucket], tolerance: f64) {
    let mut prev = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        let delta = (curr - prev).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / curr <= tolerance {
            b.count = prev;
        } else {
            prev = curr;
        }
    }
}

/// Removes decreases between successive buckets (the running maximum), as
/// Prometheus does before its binary search.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let mut max = buckets[0].count;
    for b in buckets.iter_mut().skip(1) {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}

/// Parses an `le` label as Go's `strconv.ParseFloat` would for the spellings
/// exporters write (`0.1`, `1e+06`, `+Inf`). A NaN bound is refused: it has no
/// place in the order, and one hostile bucket must not void a histogram.
pub fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok().filter(|v: &f64| !v.is_nan()),
    }
}

/// The buckets one histogram gained between two scrapes, summed over its series
/// (`sum by (le)`), and how many series were taken as reset.
#[derive(Debug, Default, Clone)]
pub struct BucketIncrease {
    /// Increase per bucket, unsorted, one entry per (series, le).
    pub buckets: Vec<Bucket>,
    /// Series whose counts went down (the worker restarted): their latest counts
    /// are the increase, as `increase()` assumes a counter restarted from 0.
    pub resets: u32,
}

/// The series key of a bucket sample: its labels without `le`, in their order.
fn series_key(s: &Sample) -> Vec<(&str, &str)> {
    s.labels
        .iter()
        .filter(|(k, _)| k != "le")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn le_of(s: &Sample) -> Option<f64> {
    s.labels
        .iter()
        .find(|(k, _)| k == "le")
        .and_then(|(_, v)| parse_le(v))
}

/// The per-bucket increase from `previous` to `latest` `_bucket` samples of one
/// histogram. A series absent before counts from 0 (prometheus_client creates a
/// series at 0, so all its observations are new); a series with any bucket lower
/// than before, or a different set of bounds, is a reset. Samples without a
/// parsable `le` are skipped, as Prometheus skips them.
pub fn bucket_increase(previous: &[&Sample], latest: &[&Sample]) -> BucketIncrease {
    type Series<'a> = HashMap<Vec<(&'a str, &'a str)>, Vec<(u64, f64)>>;
    fn group<'a>(samples: &[&'a Sample]) -> Series<'a> {
        let mut m: Series<'a> = HashMap::new();
        for s in samples {
            if let Some(le) = le_of(s) {
                m.entry(series_key(s))
                    .or_default()
                    .push((le.to_bits(), s.value));
            }
        }
        m
    }
    let before = group(previous);
    let mut out = BucketIncrease::default();
    for (key, now) in group(latest) {
        let then: HashMap<u64, f64> = before
            .get(&key)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let same_bounds = then.is_empty()
            || (then.len() == now.len() && now.iter().all(|(le, _)| then.contains_key(le)));
        let reset = !same_bounds
            || now
                .iter()
                .any(|(le, v)| then.get(le).is_some_and(|p| v < p));
        if reset {
            out.resets += 1;
        }
        for (le, v) in now {
            let base = if reset {
                0.0
            } else {
                then.get(&le).copied().unwrap_or(0.0)
            };
            out.buckets.push(Bucket {
                upper_bound: f64::from_bits(le),
                // A count below 0 only comes from a broken exporter: no observations.
                count: (v - base).max(0.0),
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "quantile_tests.rs"]
mod tests;
