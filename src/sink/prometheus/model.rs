//! The online performance model as gauges, per rank and per engine: coefficients of
//! each regression by term, R² and the number of iterations each fit rests on (see
//! [`crate::state::model`]). Coefficients and R² are absent until a fit exists. The
//! regression is labelled `regression` (prefill, decode, aggregated), not `model`,
//! because `model` is the engine label users most often configure.

use super::text::{Family, Writer};
use crate::state::detail::RankDetail;
use crate::state::model::{ModelKind, ModelSums, TERMS};
use crate::state::{EngineSnapshot, RankSnapshot};

/// Rank coefficients.
pub const COEFFICIENT: Family = Family::gauge(
    "fpm_model_coefficient",
    "Non-negative least-squares coefficient of the rank's wall_time model over the longest window: seconds (intercept) or seconds per token or request.",
);
/// Rank R².
pub const R_SQUARED: Family = Family::gauge(
    "fpm_model_r_squared",
    "Coefficient of determination of the rank's wall_time model over the longest window.",
);
/// Rank sample counts.
pub const SAMPLES: Family = Family::gauge("fpm_model_samples", "Iterations the rank's wall_time model is fitted on (heartbeats excluded) in the longest window.");
/// Engine coefficients.
pub const ENGINE_COEFFICIENT: Family = Family::gauge(
    "fpm_engine_model_coefficient",
    "Non-negative least-squares coefficient of the wall_time model fitted on all the engine's ranks over the longest window.",
);
/// Engine R².
pub const ENGINE_R_SQUARED: Family = Family::gauge(
    "fpm_engine_model_r_squared",
    "Coefficient of determination of the engine's wall_time model over the longest window.",
);
/// Engine sample counts.
pub const ENGINE_SAMPLES: Family = Family::gauge(
    "fpm_engine_model_samples",
    "Iterations of all the engine's ranks its wall_time model is fitted on, in the longest window.",
);

/// The per-rank families (written for ranks at full detail only).
pub fn rank_families() -> Vec<Family> {
    vec![COEFFICIENT, R_SQUARED, SAMPLES]
}

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        COEFFICIENT,
        R_SQUARED,
        SAMPLES,
        ENGINE_COEFFICIENT,
        ENGINE_R_SQUARED,
        ENGINE_SAMPLES,
    ]
}

fn write_series<'a>(
    w: &mut Writer,
    fams: [&Family; 3],
    series: impl Iterator<Item = (&'a ModelSums, &'a str)> + Clone,
) {
    let fitted: Vec<_> = series
        .clone()
        .flat_map(|(sums, l)| ModelKind::ALL.map(|k| (k, sums.get(k).fit(k), l)))
        .collect();
    w.family(fams[0]);
    for (kind, fit, l) in &fitted {
        if let Some(c) = fit.coefficients {
            for &i in kind.terms() {
                w.sample(
                    fams[0],
                    l,
                    &[("regression", kind.as_str()), ("term", TERMS[i])],
                    c[i],
                );
            }
        }
    }
    w.family(fams[1]);
    for (kind, fit, l) in &fitted {
        if let Some(r2) = fit.r_squared {
            w.sample(fams[1], l, &[("regression", kind.as_str())], r2);
        }
    }
    w.family(fams[2]);
    for (kind, fit, l) in &fitted {
        w.sample(
            fams[2],
            l,
            &[("regression", kind.as_str())],
            fit.samples as f64,
        );
    }
}

/// Writes the rank families of the ranks at full detail (none at all when no rank
/// is) and the engine families.
pub fn write(
    w: &mut Writer,
    ranks: &[RankSnapshot],
    rank_labels: &[String],
    details: &[RankDetail],
    engines: &[EngineSnapshot],
    engine_labels: &[String],
) {
    if details.contains(&RankDetail::Full) {
        write_series(
            w,
            [&COEFFICIENT, &R_SQUARED, &SAMPLES],
            ranks
                .iter()
                .zip(rank_labels)
                .zip(details)
                .filter(|(_, d)| **d == RankDetail::Full)
                .map(|((r, l), _)| (&r.model, l.as_str())),
        );
    }
    write_series(
        w,
        [&ENGINE_COEFFICIENT, &ENGINE_R_SQUARED, &ENGINE_SAMPLES],
        engines
            .iter()
            .zip(engine_labels)
            .map(|(e, l)| (&e.model, l.as_str())),
    );
}
