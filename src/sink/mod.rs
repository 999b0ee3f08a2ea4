//! Sinks: the forms in which the state leaves the exporter.

pub mod feeds;
pub mod json;
pub mod nats;
pub mod prometheus;
pub mod snapshots;
pub mod stream;
