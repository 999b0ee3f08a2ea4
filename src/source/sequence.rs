//! Sequence accounting for one publisher endpoint.
//!
//! Publishers number their messages 0, 1, 2, ... per process. Over one PUB->SUB
//! connection (a TCP or IPC stream) frames can be dropped by the publisher's high-water
//! mark but never repeated or reordered, and a publisher cannot restart without its
//! connections ending. So the rule (documented in `proto/sequence.md`) follows from
//! the transport, not from how far a number moved:
//!
//! - a step back, or a repeat, is always a new publisher instance: a restart;
//! - a forward jump on a connection that stayed up is loss on that connection;
//! - a forward jump on a new connection is frames sent while no connection carried
//!   them: at least that many were never seen, whether the publisher ran on or
//!   restarted and counted past the last number; it is counted as such, never as a
//!   restart, unless the source saw the publisher go away in between (its socket
//!   refused connections, or an ipc socket file was re-created), which makes any
//!   first number a restart.

use crate::state::sequence::SeqEvent;

/// What the source knows of the connection a frame came on, since the last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Since {
    /// The same connection as the last frame.
    #[default]
    Same,
    /// A new connection to what may be the same publisher.
    Reconnected,
    /// A new connection after the publisher was seen gone: a new instance.
    NewInstance,
}

/// Tracks the last sequence number seen on one endpoint.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    last: Option<u64>,
    since: Since,
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

    /// Classifies `seq` and remembers it.
    pub fn observe(&mut self, seq: u64) -> SeqEvent {
        let since = std::mem::take(&mut self.since);
        let Some(last) = self.last.replace(seq) else {
            return SeqEvent::First;
        };
        if self.keyed {
            return if seq <= last {
                SeqEvent::Restart
            } else if seq == last + 1 {
                SeqEvent::InOrder
            } else {
                SeqEvent::Gap {
                    missed: seq - last - 1,
                }
            };
        }
        match since {
            Since::NewInstance => SeqEvent::Restart,
            _ if seq <= last => SeqEvent::Restart,
            _ if seq == last + 1 => SeqEvent::InOrder,
            Since::Same => SeqEvent::Gap {
                missed: seq - last - 1,
            },
            Since::Reconnected => SeqEvent::Unseen {
                frames: seq - last - 1,
            },
        }
    }

    /// Notes a new connection: the next frame may come after frames sent into no
    /// connection, or from another publisher instance. `new_instance` says the
    /// source saw the publisher go away in between (connections refused, a
    /// re-created ipc socket file): the next frame is a restart, whatever its number.
    pub fn on_reconnect(&mut self, new_instance: bool) {
        if new_instance {
            self.since = Since::NewInstance;
        } else if self.since == Since::Same {
            self.since = Since::Reconnected;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut SequenceTracker, seqs: impl IntoIterator<Item = u64>) -> Vec<SeqEvent> {
        seqs.into_iter().map(|s| t.observe(s)).collect()
    }

    /// (missed on a live connection, unseen across reconnects, restarts, duplicates).
    fn counts(events: &[SeqEvent]) -> (u64, u64, u64, u64) {
        let mut c = (0, 0, 0, 0);
        for e in events {
            match e {
                SeqEvent::Gap { missed } => c.0 += missed,
                SeqEvent::Unseen { frames } => c.1 += frames,
                SeqEvent::Restart => c.2 += 1,
                SeqEvent::Duplicate => c.3 += 1,
                _ => {}
            }
        }
        c
    }

    #[test]
    fn keyed_publisher_counts_a_jump_across_an_outage_as_loss() {
        let mut t = SequenceTracker::keyed();
        feed(&mut t, 0..=10);
        t.on_reconnect(false);
        assert_eq!(feed(&mut t, [20]), [SeqEvent::Gap { missed: 9 }]);
        assert_eq!(feed(&mut t, [3]), [SeqEvent::Restart]);
    }

    #[test]
    fn live_connection_gaps_and_late_join() {
        let mut t = SequenceTracker::default();
        assert_eq!(feed(&mut t, [500]), [SeqEvent::First], "late join");
        assert_eq!(
            feed(&mut t, [501, 505, 506]),
            [
                SeqEvent::InOrder,
                SeqEvent::Gap { missed: 3 },
                SeqEvent::InOrder
            ]
        );
    }

    #[test]
    fn a_step_back_of_any_size_is_one_restart_not_duplicates() {
        let mut t = SequenceTracker::default();
        feed(&mut t, 0..=1000);
        // The publisher restarted; the exporter first sees its frame 600, then onwards.
        t.on_reconnect(false);
        assert_eq!(counts(&feed(&mut t, 600..=900)), (0, 0, 1, 0));
        // A step back on the same connection is a restart too, whatever its size.
        assert_eq!(counts(&feed(&mut t, 450..=500)), (0, 0, 1, 0));
        assert_eq!(feed(&mut t, [500]), [SeqEvent::Restart], "a repeat");
    }

    #[test]
    fn a_forward_jump_across_a_reconnect_is_frames_unseen_not_a_restart() {
        let mut t = SequenceTracker::default();
        feed(&mut t, 0..=30);
        // The connection dropped (a heartbeat timeout, a network blip) while the
        // publisher ran on: 31..=339 went into no connection.
        t.on_reconnect(false);
        let events = feed(&mut t, 340..=360);
        assert_eq!(events[0], SeqEvent::Unseen { frames: 309 });
        assert_eq!(counts(&events), (0, 309, 0, 0));
        // Two reconnects before the next frame are still one jump.
        t.on_reconnect(false);
        t.on_reconnect(false);
        assert_eq!(feed(&mut t, [365]), [SeqEvent::Unseen { frames: 4 }]);
        // The next number after a reconnect loses nothing.
        t.on_reconnect(false);
        assert_eq!(
            feed(&mut t, [366, 368]),
            [SeqEvent::InOrder, SeqEvent::Gap { missed: 1 }]
        );
    }

    #[test]
    fn a_publisher_seen_gone_makes_any_first_number_a_restart() {
        let mut t = SequenceTracker::default();
        feed(&mut t, 0..=30);
        // Connections were refused in between, then a busy new instance is first
        // seen above where the old one stopped, or exactly at the next number.
        for first in [40, 41, 5] {
            t.on_reconnect(true);
            assert_eq!(
                feed(&mut t, [first, first + 1]),
                [SeqEvent::Restart, SeqEvent::InOrder]
            );
        }
        // A plain reconnect after the evidence does not weaken it.
        t.on_reconnect(true);
        t.on_reconnect(false);
        assert_eq!(feed(&mut t, [100]), [SeqEvent::Restart]);
    }

    #[test]
    fn many_short_lived_publishers_count_one_restart_each() {
        let mut t = SequenceTracker::default();
        let mut events = Vec::new();
        // Each instance lives for 3 to 120 frames; the exporter sees every one go
        // (refused connects) and catches it from a varying first frame.
        for (first, len) in [(0, 3), (2, 120), (70, 80), (5, 4), (100, 30), (0, 65)] {
            t.on_reconnect(true);
            events.extend(feed(&mut t, first..first + len));
        }
        assert_eq!(events[0], SeqEvent::First);
        assert_eq!(counts(&events), (0, 0, 5, 0));
    }
}
