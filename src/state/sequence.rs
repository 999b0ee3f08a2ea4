//! What a frame's sequence number said about its stream ([`SeqEvent`]), as the
//! source classified it; the rank's counters fold it in. The rule that classifies it
//! lives with the sources (`crate::source::sequence`), which see the connections.

/// What one sequence number tells about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first frame seen from this endpoint (nothing to compare with).
    First,
    /// The next number, as expected.
    InOrder,
    /// `missed` frames were lost before this one on a live connection.
    Gap {
        /// How many sequence numbers were skipped.
        missed: u64,
    },
    /// At least `frames` frames were sent and never seen: the number jumped forward
    /// across a new connection. Whether the publisher ran on while no connection
    /// existed or restarted and counted past the last number, that many were sent
    /// into no connection.
    Unseen {
        /// How many sequence numbers were skipped.
        frames: u64,
    },
    /// A new publisher instance: the counter stepped back (or repeated).
    Restart,
    /// A repeated or out-of-order number. ZMQ cannot produce one (see the module doc);
    /// kept for sources whose transport can redeliver.
    Duplicate,
}
