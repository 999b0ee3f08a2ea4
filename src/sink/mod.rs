//! Sinks: the forms in which the state leaves the exporter.

pub mod json;
pub mod prometheus;
pub mod stream;
