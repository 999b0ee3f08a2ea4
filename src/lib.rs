//! fpm-exporter: subscribes to LLM engines' forward-pass metrics (FPM) over ZMQ and
//! re-exports them for Prometheus, planners and routers.
//!
//! The data path, one module per stage:
//! [`source`] (ZMQ SUB per rank) -> [`wire`] (decode) -> [`state`] (per-rank state and
//! rolling statistics) -> [`sink`] (Prometheus text, JSON snapshots, event stream)
//! -> [`http`] (axum server). [`demo`] is a simulated engine for first runs and tests.

pub mod app;
pub mod capture;
pub mod config;
pub mod demo;
pub mod http;
pub mod loadgen;
pub mod publish;
pub mod sink;
pub mod source;
pub mod state;
pub mod wire;
