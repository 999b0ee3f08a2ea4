//! Sinks: the forms in which the state leaves the exporter, one module per resource.
//! Pieces more than one resource renders live in the two shared modules, so that no
//! sink imports another: [`shared_json`] (the rank, model and loads JSON) and
//! [`serving`] (the serving side's limit counters).

pub mod load_snapshot;
pub mod loads_model;
pub mod nats;
pub mod prometheus;
pub mod ranks_document;
pub mod serving;
pub mod shared_json;
pub mod stream;
