//! Sequence accounting for one publisher connection.
//!
//! Publishers number their messages 0, 1, 2, ... per process. A jump forward is real
//! loss; a fall back to a low number is a restarted publisher, not a gap; a repeat or
//! a small step back is a duplicate or out-of-order frame.

/// What one sequence number tells about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first frame seen from this publisher (nothing to compare with).
    First,
    /// The next number, as expected.
    InOrder,
    /// `missed` frames were lost before this one.
    Gap {
        /// How many sequence numbers were skipped.
        missed: u64,
    },
    /// The publisher restarted (its counter fell back).
    Restart,
    /// A repeated or out-of-order number.
    Duplicate,
}

/// A step back to at most this number is always read as a restart.
const RESTART_FLOOR: u64 = 64;

/// Tracks the last sequence number of one publisher.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    last: Option<u64>,
}

impl SequenceTracker {
    /// Classifies `seq` and remembers it (unless it is a duplicate).
    pub fn observe(&mut self, seq: u64) -> SeqEvent {
        let Some(last) = self.last else {
            self.last = Some(seq);
            return SeqEvent::First;
        };
        if seq == last.wrapping_add(1) {
            self.last = Some(seq);
            SeqEvent::InOrder
        } else if seq > last {
            self.last = Some(seq);
            SeqEvent::Gap {
                missed: seq - last - 1,
            }
        } else if seq == last || (seq > RESTART_FLOOR && seq >= last / 2) {
            SeqEvent::Duplicate
        } else {
            self.last = Some(seq);
            SeqEvent::Restart
        }
    }

    /// Forgets the publisher (e.g. after the socket was re-created).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_publisher_cases() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(500), SeqEvent::First, "late join: no gap counted");
        assert_eq!(t.observe(501), SeqEvent::InOrder);
        assert_eq!(t.observe(505), SeqEvent::Gap { missed: 3 });
        assert_eq!(t.observe(505), SeqEvent::Duplicate);
        assert_eq!(
            t.observe(400),
            SeqEvent::Duplicate,
            "a step back, not a restart"
        );
        assert_eq!(t.observe(506), SeqEvent::InOrder);
        assert_eq!(
            t.observe(2),
            SeqEvent::Restart,
            "slow joiner missed 0 and 1"
        );
        assert_eq!(t.observe(3), SeqEvent::InOrder);
        assert_eq!(t.observe(0), SeqEvent::Restart);
        let mut t = SequenceTracker::default();
        t.observe(1_000_000);
        assert_eq!(
            t.observe(300_000),
            SeqEvent::Restart,
            "far below half: restarted"
        );
    }
}
