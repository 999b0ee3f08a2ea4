//! Loss and restarts of a rank whatever path its frames took. The envelope sequence
//! numbers one publisher's messages (a relay's, or `FpmDirectPublisher`'s), so it shows
//! only the NATS hop; the FPM's own `counter_id`, stamped by the engine for each rank,
//! shows every hop: frames an edge lost on ZMQ, frames its relay dropped, frames NATS
//! lost. A step back of `counter_id` is the engine restarting, whichever publisher
//! carried it (a restarted `FpmDirectPublisher` comes back under a new publisher id).
//! And no single number may count more than a publisher could have sent.

use crate::state::sequence::SeqEvent;
use std::time::{Duration, Instant};

/// Most messages a publisher is taken to send per second: a jump beyond what this
/// rate allows since the last message is a new numbering (counted as a restart), not
/// loss, so one forged number cannot add 10^15 to the loss counters.
pub const MAX_RATE: u64 = 100_000;

/// The most a jump after `silent` may count as lost.
pub fn max_jump(silent: Duration) -> u64 {
    MAX_RATE.saturating_mul(silent.as_secs() + 1)
}

/// Caps a gap at what [`max_jump`] allows: beyond it, the numbering started over.
pub fn bounded(event: SeqEvent, silent: Duration) -> SeqEvent {
    match event {
        SeqEvent::Gap { missed } | SeqEvent::Unseen { frames: missed }
            if missed > max_jump(silent) =>
        {
            SeqEvent::Restart
        }
        e => e,
    }
}

/// The last `counter_id` of one rank.
#[derive(Debug, Clone)]
pub struct RankCounter {
    last: u64,
    /// When the rank's last frame came.
    pub seen: Instant,
    /// The publisher that carried it (a rank moving to another publisher id frees the
    /// old one).
    pub publisher: u64,
}

impl RankCounter {
    /// A rank first seen now with `counter`.
    pub fn new(counter: u64, publisher: u64, now: Instant) -> Self {
        RankCounter {
            last: counter,
            seen: now,
            publisher,
        }
    }

    /// Classifies a frame's `counter_id`. A heartbeat that steps back says nothing (a
    /// publisher may send heartbeats with a zeroed counter); an iteration frame that
    /// steps back is a restart; a repeat says nothing (payloads without a counter
    /// decode as 0 every time).
    pub fn observe(&mut self, counter: u64, heartbeat: bool, now: Instant) -> SeqEvent {
        let silent = now.saturating_duration_since(self.seen);
        self.seen = now;
        let last = self.last;
        if counter == last || (heartbeat && counter < last) {
            return SeqEvent::InOrder;
        }
        self.last = counter;
        if counter < last {
            return SeqEvent::Restart;
        }
        if counter == last + 1 {
            return SeqEvent::InOrder;
        }
        bounded(
            SeqEvent::Gap {
                missed: counter - last - 1,
            },
            silent,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_and_restarts_and_bounds_a_jump() {
        let t = Instant::now();
        let mut c = RankCounter::new(0, 1, t);
        assert_eq!(c.observe(1, false, t), SeqEvent::InOrder);
        assert_eq!(c.observe(12, false, t), SeqEvent::Gap { missed: 10 });
        assert_eq!(c.observe(0, true, t), SeqEvent::InOrder, "zeroed heartbeat");
        assert_eq!(c.observe(13, true, t), SeqEvent::InOrder);
        assert_eq!(c.observe(2, false, t), SeqEvent::Restart);
        assert_eq!(c.observe(2, false, t), SeqEvent::InOrder, "no counter");
        assert_eq!(
            c.observe(1_000_000_000_000_000, false, t),
            SeqEvent::Restart
        );
        assert_eq!(max_jump(Duration::from_secs(30)), 3_100_000);
    }
}
