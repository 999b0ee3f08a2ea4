//! Capture: `--record FILE` writes every accepted frame as JSON lines in Dynamo's
//! recorder format. It reads the state's event ring like any sink; playing a capture
//! back (`fpm-exporter replay FILE`) is on the publisher side,
//! [`crate::publisher::replay`].

pub mod recorder;
