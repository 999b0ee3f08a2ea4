//! Ingest's own bounded queue between the NATS client and the ingest loop, so that what
//! a flood costs is counted exactly. async-nats drops a message its subscription queue
//! cannot take and reports each drop as an event on a 128-slot queue that drops events
//! in turn: under a flood its count is a small fraction of the loss. So one task moves
//! messages from the client's queue to ours and counts each one ours refuses, and the
//! client's own drops are read from its connection statistics, which never drop: every
//! message it read from the server (`in_messages`) was either handed on or dropped.

use super::{LogEvery, NatsStats};
use futures::StreamExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Messages ingest's queue holds before it drops (a flood's burst, not a backlog:
/// each is handled in microseconds).
pub const INGEST_QUEUE: usize = 65_536;

/// The client's own subscription queue (only the forwarding task reads it).
pub const CLIENT_QUEUE: usize = 65_536;

/// Least time between two log lines about dropped messages.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// How often the client's drops are brought into the count.
const RECKON_EVERY: Duration = Duration::from_millis(100);

/// What the forwarding task needs of the client.
pub struct Source {
    /// The FPM subscription: the client's only one, so all it reads is for it.
    pub sub: async_nats::Subscriber,
    /// The client's connection statistics.
    pub client: Arc<async_nats::Statistics>,
}

/// Moves messages from the subscription into a queue of `capacity` until `shutdown`
/// (then unsubscribes), counting in [`NatsStats::slow_consumer`] each message either
/// queue had no room for. The first drop is logged, then one line per
/// [`DROP_LOG_EVERY`] at most, with the count since the last.
pub fn forward(
    source: Source,
    stats: Arc<NatsStats>,
    capacity: usize,
    mut shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<async_nats::Message> {
    let (tx, rx) = mpsc::channel(capacity);
    let Source { mut sub, client } = source;
    tokio::spawn(async move {
        let mut log = LogEvery::new(DROP_LOG_EVERY);
        let mut taken = 0u64;
        let mut client_drops = 0u64;
        let mut last_read = u64::MAX;
        let mut tick = tokio::time::interval(RECKON_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                m = sub.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = tick.tick() => {
                    let read = client.in_messages.load(Relaxed);
                    let quiet = read == last_read;
                    last_read = read;
                    // Past the coop budget: a spent one would hide queued messages,
                    // which would then be taken as dropped.
                    let (dropped, next) = match super::poll_now(sub.next()) {
                        // Nothing came for a whole tick and the queue is empty: every
                        // message the client read and did not drop has been taken.
                        None if quiet => (read.saturating_sub(taken), None),
                        // Otherwise the queue holds at most its capacity, and one more
                        // may be on its way in: a floor, made exact once quiet.
                        m => (
                            read.saturating_sub(taken + CLIENT_QUEUE as u64 + 1),
                            m.flatten(),
                        ),
                    };
                    if dropped > client_drops {
                        let n = dropped - client_drops;
                        client_drops = dropped;
                        stats.slow_consumer.fetch_add(n, Relaxed);
                        note(&mut log, n, capacity);
                    }
                    match next {
                        Some(m) => m,
                        None => continue,
                    }
                }
            };
            taken += 1;
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.slow_consumer.fetch_add(1, Relaxed);
                    note(&mut log, 1, capacity);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        let _ = sub.unsubscribe().await;
    });
    rx
}

/// Logs `n` more dropped messages, rate-limited.
fn note(log: &mut LogEvery, n: u64, capacity: usize) {
    let first = log.is_first();
    let held = log.suppressed;
    log.suppressed += n - 1;
    if !log.due() {
        return;
    }
    if first {
        tracing::warn!(
            queue = capacity,
            "nats ingest falls behind the messages sent to it: dropping (slow consumer, counted in fpm_nats_slow_consumer_events_total; logged every {}s at most)",
            DROP_LOG_EVERY.as_secs()
        );
    } else {
        tracing::warn!(
            dropped = held + n,
            "nats ingest still dropping messages (slow consumer) since the last report"
        );
    }
}
