//! Capture and replay: `--record FILE` writes every accepted frame as JSON lines in
//! Dynamo's recorder format; `fpm-exporter replay FILE` publishes such a capture
//! again over ZMQ.

pub mod record;
pub mod replay;
