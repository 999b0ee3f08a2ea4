//! Sinks: the forms in which the state leaves the exporter.

pub mod json;
pub mod loads_model;
pub mod nats;
pub mod prometheus;
pub mod serving;
pub mod snapshots;
pub mod stream;

/// Former name of [`loads_model`], for callers not yet moved (`json.rs`).
pub use loads_model as feeds;
