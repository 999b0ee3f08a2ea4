//! Per-endpoint connection state and counters, shared between a subscriber task
//! (which writes) and the sinks (which read) without locks.

use super::zmtp::HandshakeFailure;
use crate::wire::DecodeError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One configured ZMQ endpoint (one dp rank's publisher address).
#[derive(Debug)]
pub struct EndpointStats {
    /// Index of the engine this endpoint belongs to.
    pub engine: usize,
    /// The dp rank this endpoint is expected to carry.
    pub expected_rank: u64,
    /// The ZMQ address, e.g. `tcp://127.0.0.1:20381`.
    pub address: Arc<str>,
    /// Whether the subscriber task has started (for readiness).
    pub started: AtomicBool,
    /// Whether the SUB socket is currently connected.
    pub connected: AtomicBool,
    /// Successful connects (the first one and every re-creation).
    pub connects: AtomicU64,
    /// Multipart messages received.
    pub messages: AtomicU64,
    /// Messages skipped, by [`DecodeError`] reason.
    pub decode_errors: [AtomicU64; DecodeError::ALL.len()],
    /// Socket receive errors (disconnects noticed while receiving).
    pub receive_errors: AtomicU64,
    /// Failed handshakes, by [`HandshakeFailure`] reason.
    pub handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
}

impl EndpointStats {
    /// Fresh stats for one endpoint.
    pub fn new(engine: usize, expected_rank: u64, address: &str) -> Self {
        EndpointStats {
            engine,
            expected_rank,
            address: address.into(),
            started: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            decode_errors: Default::default(),
            receive_errors: AtomicU64::new(0),
            handshake_failures: Default::default(),
        }
    }

    /// Counts one skipped message.
    pub fn count_error(&self, reason: DecodeError) {
        self.decode_errors[reason.index()].fetch_add(1, Relaxed);
    }
}
