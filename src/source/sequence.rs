//! Sequence accounting for one publisher endpoint.
//!
//! Publishers number their messages 0, 1, 2, ... per process. Over one PUB->SUB
//! connection (a TCP or IPC stream) frames can be dropped by the publisher's high-water
//! mark but never repeated or reordered, so the rule (documented in
//! `proto/sequence.md`) follows from the transport, not from how far a number moved:
//!
//! - a step back, or a repeat, is always a new publisher instance: a restart;
//! - a forward jump on a connection that stayed up is loss;
//! - a forward jump on a new connection (socket re-created, peer reconnected) or after
//!   a silence no live publisher keeps ([`RESYNC_SILENCE`]) cannot be loss we observed:
//!   the frames sent meanwhile went nowhere, or belong to a restarted publisher. It is
//!   counted as a restart, never as missed frames.

use crate::state::sequence::SeqEvent;
use std::time::{Duration, Instant};

/// Silence after which a forward jump is read as a restart rather than loss: a live
/// publisher heartbeats every second even when idle, and loss comes in bursts while
/// frames flow, so a jump first seen after two missing heartbeats is not a drop the
/// exporter saw happen.
pub const RESYNC_SILENCE: Duration = Duration::from_secs(2);

/// Tracks the last sequence number seen on one endpoint.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    last: Option<(u64, Instant)>,
    /// Set when the connection changed since the last frame.
    reconnected: bool,
    /// The source names the publisher instance (NATS envelope `publisher_id`), so a
    /// forward jump is always loss: a restarted publisher arrives under a new key.
    keyed: bool,
}

impl SequenceTracker {
    /// A tracker for a source that keys on the publisher instance itself: neither a new
    /// connection nor a silence can hide a restart, so every forward jump is a gap.
    pub fn keyed() -> Self {
        SequenceTracker {
            keyed: true,
            ..Self::default()
        }
    }

    /// Classifies `seq`, received at `now`, and remembers it.
    pub fn observe(&mut self, seq: u64, now: Instant) -> SeqEvent {
        let reconnected = std::mem::take(&mut self.reconnected);
        let Some((last, at)) = self.last.replace((seq, now)) else {
            return SeqEvent::First;
        };
        if seq <= last {
            SeqEvent::Restart
        } else if seq == last + 1 {
            SeqEvent::InOrder
        } else if !self.keyed
            && (reconnected || now.saturating_duration_since(at) >= RESYNC_SILENCE)
        {
            SeqEvent::Restart
        } else {
            SeqEvent::Gap {
                missed: seq - last - 1,
            }
        }
    }

    /// Notes that the socket was re-created or its peer connection changed: the next
    /// frame may come from another publisher instance.
    pub fn on_reconnect(&mut self) {
        self.reconnected = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seqs` 10 ms apart starting at `t`; returns the events and the next time.
    fn feed(
        t: &mut SequenceTracker,
        at: &mut Instant,
        seqs: impl IntoIterator<Item = u64>,
    ) -> Vec<SeqEvent> {
        seqs.into_iter()
            .map(|s| {
                *at += Duration::from_millis(10);
                t.observe(s, *at)
            })
            .collect()
    }

    fn counts(events: &[SeqEvent]) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for e in events {
            match e {
                SeqEvent::Gap { missed } => c.0 += missed,
                SeqEvent::Restart => c.1 += 1,
                SeqEvent::Duplicate => c.2 += 1,
                _ => {}
            }
        }
        c
    }

    #[test]
    fn keyed_publisher_counts_a_jump_across_an_outage_as_loss() {
        let (mut t, mut at) = (SequenceTracker::keyed(), Instant::now());
        feed(&mut t, &mut at, 0..=10);
        t.on_reconnect();
        at += Duration::from_secs(5);
        assert_eq!(feed(&mut t, &mut at, [20]), [SeqEvent::Gap { missed: 9 }]);
        assert_eq!(feed(&mut t, &mut at, [3]), [SeqEvent::Restart]);
    }

    #[test]
    fn live_connection_gaps_and_late_join() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        assert_eq!(feed(&mut t, &mut at, [500]), [SeqEvent::First], "late join");
        assert_eq!(
            feed(&mut t, &mut at, [501, 505, 506]),
            [
                SeqEvent::InOrder,
                SeqEvent::Gap { missed: 3 },
                SeqEvent::InOrder
            ]
        );
    }

    #[test]
    fn restart_first_seen_above_64_is_one_restart_not_duplicates() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        feed(&mut t, &mut at, 0..=1000);
        // The publisher restarted; the exporter first sees its frame 600, then onwards.
        t.on_reconnect();
        let events = feed(&mut t, &mut at, 600..=900);
        assert_eq!(counts(&events), (0, 1, 0));
        // Even without a connection event (zeromq reconnected on its own), a step back
        // on the same socket is a restart, whatever its size.
        let events = feed(&mut t, &mut at, 450..=500);
        assert_eq!(counts(&events), (0, 1, 0));
        assert_eq!(
            feed(&mut t, &mut at, [500]),
            [SeqEvent::Restart],
            "a repeat"
        );
    }

    #[test]
    fn short_lived_publisher_jump_after_reconnect_is_a_restart_not_a_gap() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        feed(&mut t, &mut at, 0..=30);
        t.on_reconnect();
        let events = feed(&mut t, &mut at, 40..=60);
        assert_eq!(events[0], SeqEvent::Restart);
        assert_eq!(counts(&events), (0, 1, 0), "no gap of 9");
    }

    #[test]
    fn jump_after_a_silence_is_a_restart_even_on_the_same_socket() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        feed(&mut t, &mut at, 0..=30);
        at += RESYNC_SILENCE;
        assert_eq!(t.observe(40, at), SeqEvent::Restart);
        // A long silence followed by the next number is a long forward pass, not a restart.
        at += Duration::from_secs(30);
        assert_eq!(t.observe(41, at), SeqEvent::InOrder);
    }

    #[test]
    fn reconnect_without_loss_stays_in_order() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        feed(&mut t, &mut at, 0..=10);
        t.on_reconnect();
        assert_eq!(
            feed(&mut t, &mut at, [11, 13]),
            [SeqEvent::InOrder, SeqEvent::Gap { missed: 1 }]
        );
    }

    #[test]
    fn many_short_lived_publishers_count_one_restart_each() {
        let (mut t, mut at) = (SequenceTracker::default(), Instant::now());
        let mut events = Vec::new();
        // Each instance lives for 3 to 120 frames; the exporter catches it from a
        // varying first frame, sometimes above where the last one stopped.
        for (i, (first, len)) in [(0, 3), (2, 120), (70, 80), (5, 4), (100, 30), (0, 65)]
            .into_iter()
            .enumerate()
        {
            if i % 2 == 0 {
                t.on_reconnect();
            } else {
                at += RESYNC_SILENCE;
            }
            events.extend(feed(&mut t, &mut at, first..first + len));
        }
        assert_eq!(events[0], SeqEvent::First);
        assert_eq!(counts(&events), (0, 5, 0));
    }
}
