//! Writers of window statistics shared by the rank and engine families: the
//! mean/variance/min/max gauges and the wall_time summary.

use super::detail::writes_window_stat;
use super::text::{push_label, Family, Writer};
use crate::state::detail::RankDetail;
use crate::state::fields::FIELDS;
use crate::state::quantiles::QUANTILES;
use crate::state::WindowSnapshot;

/// Writes mean/variance/min/max families for any series that carries windows
/// (ranks here, engines in the engine collector, always at full detail). Empty
/// windows write nothing: absent is honest, a zero would be a made-up number. A
/// family no series writes at its level is left out whole.
pub fn write_window_stats<'a>(
    w: &mut Writer,
    series: impl Iterator<Item = (&'a [WindowSnapshot], &'a str, RankDetail)> + Clone,
    window_names: &[String],
    fams: [&Family; 4],
) {
    // The (field, window) label pairs are the same for every series: render them once.
    let extras: Vec<Vec<String>> = window_names
        .iter()
        .map(|name| {
            FIELDS
                .iter()
                .map(|field| {
                    let mut e = String::new();
                    push_label(&mut e, "field", field.path);
                    push_label(&mut e, "window", name);
                    e
                })
                .collect()
        })
        .collect();
    let any_full = series.clone().any(|(_, _, d)| d == RankDetail::Full);
    for (k, fam) in fams.iter().enumerate() {
        if k > 0 && !any_full {
            continue;
        }
        w.family(fam);
        for (windows, l, detail) in series.clone() {
            for (win, extras) in windows.iter().zip(&extras) {
                if win.moments.count == 0 {
                    continue;
                }
                for (i, extra) in extras.iter().enumerate() {
                    if !writes_window_stat(detail, k, i) {
                        continue;
                    }
                    let s = win.moments.summary(i);
                    let v = [s.mean, s.variance, s.min, s.max][k];
                    w.sample_rendered(fam, l, extra, v);
                }
            }
        }
    }
}

/// Writes one window's quantile samples (none for an empty window) and the cumulative
/// `_sum`/`_count` (`totals`: seconds, iterations), which never go down, so `rate()` of
/// them reads right. Shared by the rank and engine summaries.
pub fn write_quantiles(
    w: &mut Writer,
    fam: &Family,
    labels: &str,
    window: &str,
    win: &WindowSnapshot,
    (sum, count): (f64, u64),
) {
    if win.moments.count > 0 {
        for ((_, q), v) in QUANTILES.iter().zip(win.wall_time_quantiles) {
            w.sample(fam, labels, &[("window", window), ("quantile", q)], v);
        }
    }
    w.sample_suffixed(fam, "_sum", labels, &[("window", window)], sum);
    w.sample_suffixed(fam, "_count", labels, &[("window", window)], count as f64);
}
