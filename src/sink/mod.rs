//! Sinks: the forms in which the state leaves the exporter.

pub mod prometheus;
pub mod json;
pub mod stream;
