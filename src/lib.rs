//! fpm-exporter: subscribes to LLM engines' forward-pass metrics (FPM) over ZMQ and
//! re-exports them for Prometheus, planners and routers.
//!
//! The data path, one module per stage:
//! [`source`] (ZMQ SUB per rank) -> [`wire`] (decode) -> [`state`] (per-rank state and
//! rolling statistics) -> [`sink`] (Prometheus text, JSON snapshots, event stream)
//! -> [`http`] (axum server); [`capture`] records accepted frames beside the sinks.
//! [`publisher`] plays engines (demo, load generator, replay) and shares only [`wire`]
//! and [`address`] with the consumer side. [`top`] is a client of the HTTP API (the
//! terminal view). docs/architecture.md has the picture.

pub mod address;
pub mod alloc;
pub mod app;
pub mod capture;
pub mod config;
pub mod http;
pub mod publisher;
pub mod sink;
pub mod source;
pub mod state;
pub mod top;
pub mod wire;

// Former paths of the publisher side, kept so that callers not yet moved (the bench,
// branches in flight) build unchanged; new code uses `publisher::...`.
