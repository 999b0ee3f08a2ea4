//! The per-engine detail level of `/metrics` (`--rank-detail`): a tunable the state
//! stage carries in [`super::StateConfig`] for the Prometheus sink, which decides what
//! each level writes (`sink::prometheus::detail`).

use serde::Deserialize;

/// Per-rank detail of the Prometheus output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RankDetail {
    /// What dashboards, alerts and planners read per rank: liveness, the latest frame,
    /// counters, wall_time quantiles and the window mean of the fields the
    /// Prometheus sink lists as lean (`LEAN_MEAN_FIELDS`).
    #[default]
    Lean,
    /// Every per-rank family: window mean, variance, min and max of every field, and
    /// the rank's fitted wall_time model.
    Full,
}

impl RankDetail {
    /// The flag and TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RankDetail::Lean => "lean",
            RankDetail::Full => "full",
        }
    }
}

/// The detail of every engine: configured engines by index, the default for the rest
/// (engines a source discovers at run time, such as NATS scopes).
#[derive(Debug, Clone, Default)]
pub struct RankDetails {
    /// Level of engines without their own.
    pub default: RankDetail,
    /// Level of engine `i` (configuration order); shorter than the engine table when
    /// engines were added since.
    pub engines: Vec<RankDetail>,
}

impl RankDetails {
    /// The level of engine `engine`.
    #[inline]
    pub fn of(&self, engine: usize) -> RankDetail {
        self.engines.get(engine).copied().unwrap_or(self.default)
    }
}
