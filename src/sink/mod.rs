//! Sinks: the forms in which the state leaves the exporter, one module per resource.
//! Pieces more than one resource renders live in the two shared modules, so that no
//! sink imports another: [`shared_json`] (the rank, model and loads JSON) and
//! [`serving`] (the serving side's limit counters).

pub mod loads_model;
pub mod nats;
pub mod prometheus;
pub mod ranks_document;
pub mod serving;
pub mod shared_json;
pub mod stream;

/// Former name of [`loads_model`], for callers not yet moved.
pub use loads_model as feeds;
/// Former name of [`ranks_document`] (`sink::json`), for the HTTP handlers and tests
/// of branches not yet moved.
pub use ranks_document as json;
