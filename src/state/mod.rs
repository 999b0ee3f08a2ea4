//! Per-rank state and rolling statistics, and the registry that holds every rank.
//!
//! Ingest tasks fold frames into [`RankState`](rank::RankState)s (one mutex per rank, so ranks never
//! wait on each other); a sweeper ages ranks into stale and expired; sinks read
//! consistent [`Snapshot`]s.

mod clock;
mod config;
pub mod detail;
pub mod engine_view;
pub mod engines;
mod event;
pub mod fields;
pub mod imbalance;
pub mod intake;
pub mod labels;
pub mod load;
pub mod load_snapshots;
pub mod model;
pub mod nnls;
pub mod quantiles;
pub mod rank;
mod registry;
pub mod sequence;
mod snapshot;
mod subwindows;
mod sweep;
pub mod views;
pub mod welford;
pub mod window;

pub use clock::{system_wall_clock, Now, WallClock};
pub use config::{EngineInfo, StateConfig};
pub use event::{Event, EventKind};
pub use registry::{RankCache, RankFilter, RankHandle, Registry};
pub use snapshot::{EngineSnapshot, RankSnapshot, Snapshot, WindowSnapshot};

#[cfg(test)]
mod imbalance_tests;
#[cfg(test)]
mod registry_tests;
