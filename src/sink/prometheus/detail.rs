//! How much each rank writes to `/metrics` (`--rank-detail`, `rank_detail` per engine).
//! A fleet's series count is ranks times series per rank, so this is the knob that
//! sizes an exporter for Prometheus; `/v1/ranks` always carries everything, and the
//! engine aggregates are complete at every level. docs/series-budget.md has the tables.

use crate::state::detail::RankDetail;
use crate::state::fields::FIELD_COUNT;

/// Indexes into [`crate::state::fields::FIELDS`] whose window mean a lean rank writes:
/// the batch composition the dashboard plots and the terms of the wall_time model
/// planners fit (prefill requests and tokens, prefix-cache tokens read, decode
/// requests and their KV context).
pub const LEAN_MEAN_FIELDS: [usize; 5] = [1, 2, 4, 5, 6];

/// Whether a rank at `detail` writes window statistic `stat` (0 mean, 1 variance,
/// 2 min, 3 max) of field `field`.
#[inline]
pub fn writes_window_stat(detail: RankDetail, stat: usize, field: usize) -> bool {
    debug_assert!(field < FIELD_COUNT);
    match detail {
        RankDetail::Full => true,
        RankDetail::Lean => stat == 0 && LEAN_MEAN_FIELDS.contains(&field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fields::FIELDS;

    #[test]
    fn lean_means_are_the_fields_dashboards_and_models_read() {
        let paths: Vec<&str> = LEAN_MEAN_FIELDS.iter().map(|&i| FIELDS[i].path).collect();
        assert_eq!(
            paths,
            [
                "scheduled_requests.num_prefill_requests",
                "scheduled_requests.sum_prefill_tokens",
                "scheduled_requests.sum_prefill_kv_tokens",
                "scheduled_requests.num_decode_requests",
                "scheduled_requests.sum_decode_kv_tokens",
            ]
        );
        assert!(!writes_window_stat(RankDetail::Lean, 1, 2));
        assert!(writes_window_stat(RankDetail::Full, 3, 13));
    }

    #[test]
    fn engines_without_a_level_take_the_default() {
        let d = crate::state::detail::RankDetails {
            default: RankDetail::Full,
            engines: vec![RankDetail::Lean],
        };
        assert_eq!(d.of(0), RankDetail::Lean);
        assert_eq!(d.of(5), RankDetail::Full);
        assert_eq!(
            crate::state::detail::RankDetails::default().of(0),
            RankDetail::Lean
        );
    }
}
