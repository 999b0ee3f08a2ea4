//! Capture: `--record FILE` writes every accepted frame as JSON lines in Dynamo's
//! recorder format. It reads the state's event ring like any sink; playing a capture
//! back (`fpm-exporter replay FILE`) is on the publisher side,
//! [`crate::publisher::replay`].

pub mod recorder;

/// Former name of [`recorder`], for callers not yet moved (the Prometheus sink's
/// `record` collector).
pub use recorder as record;
