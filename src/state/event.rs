//! What the registry broadcasts: accepted frames and liveness changes, as plain data.

use super::rank::{Liveness, RankKey};
use crate::wire::ForwardPassMetrics;

/// An event for the stream: a decoded frame or a liveness change.
#[derive(Debug)]
pub struct Event {
    /// Which rank it concerns.
    pub key: RankKey,
    /// What happened.
    pub kind: EventKind,
}

/// The payload of an [`Event`].
#[derive(Debug)]
pub enum EventKind {
    /// A frame was accepted.
    Frame {
        /// Wire sequence number.
        sequence: u64,
        /// Receive time, Unix ns.
        received_at_ns: u64,
        /// The decoded frame.
        metrics: ForwardPassMetrics,
    },
    /// The rank's liveness changed.
    State {
        /// Previous state.
        from: Liveness,
        /// New state.
        to: Liveness,
        /// When, Unix ns.
        at_ns: u64,
    },
}
