//! One ZMQ SUB socket per rank endpoint, each in its own task: a stuck or noisy rank
//! never delays another.
//!
//! The `zeromq` crate reconnects by itself, but with a backoff that grows to 30 s and
//! without noticing half-open connections. So this loop owns reconnection: when the
//! transport reports the peer gone, or a connected socket has been silent for the
//! (long) re-create timeout, it drops the socket and connects afresh, pausing between
//! attempts from [`SubscriberConfig::retry_min`] doubling to `retry_max`.
//!
//! Being stale is a different thing: a state shown to users after `--stale-after` of
//! silence, decided by the registry's sweeper. A busy engine sends no heartbeats
//! during a long forward pass, so silence alone is weak evidence of a dead peer; the
//! socket is kept until the longer `--reconnect-after`.

use crate::state::endpoint::EndpointStats;
use crate::state::sequence::SequenceTracker;
use crate::state::{RankCache, Registry};
use crate::wire::decode::{decode_payload, split_message};
use crate::wire::DecodeError;
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

/// Most messages taken in one go once the socket has woken up.
const DRAIN_BATCH: usize = 256;

/// Default of `--reconnect-after`: long enough for any forward pass, short enough to
/// leave a half-open connection within a minute.
pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(30);

/// Timing of connection attempts.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// How long one connect attempt may take before it is abandoned and retried.
    pub connect_timeout: Duration,
    /// First pause between failed connect attempts; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest pause between connect attempts (bounds recovery after an outage).
    pub retry_max: Duration,
    /// Silence on a connected socket after which it is re-created (`--reconnect-after`).
    pub silence_timeout: Duration,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            connect_timeout: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            silence_timeout: DEFAULT_RECONNECT_AFTER,
        }
    }
}

/// Logs a repeated problem at most once per interval, with how many were suppressed.
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        RateLimited {
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, address: &str, reason: DecodeError, frames: usize, bytes: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            endpoint = address,
            reason = reason.as_str(),
            frames,
            bytes,
            suppressed = self.suppressed,
            "skipped a message that is not a valid FPM frame"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Per-endpoint ingest: decodes every message and folds it into the registry.
struct Ingest {
    registry: Arc<Registry>,
    stats: Arc<EndpointStats>,
    address: Arc<str>,
    tracker: SequenceTracker,
    cache: RankCache,
    log: RateLimited,
}

impl Ingest {
    /// Notes a new socket or a peer that connected or left: the next frame may come
    /// from another publisher instance (see `proto/sequence.md`).
    fn new_connection(&mut self) {
        self.tracker.on_reconnect();
    }

    fn handle(&mut self, msg: ZmqMessage) {
        self.stats.messages.fetch_add(1, Relaxed);
        let now = self.registry.now();
        let frames = msg.into_vec();
        let result = split_message(&frames).and_then(|(sequence, payload)| {
            // Account for the sequence even when the payload is bad, so a skipped
            // frame is not also reported as a lost one.
            let event = self.tracker.observe(sequence, now.instant);
            decode_payload(payload).map(|m| (sequence, event, m))
        });
        match result {
            Ok((sequence, event, metrics)) => {
                self.registry.ingest(
                    &mut self.cache,
                    self.stats.engine,
                    &self.address,
                    sequence,
                    event,
                    metrics,
                    &now,
                );
            }
            Err(reason) => {
                self.stats.count_error(reason);
                let bytes = frames.iter().map(|f| f.len()).sum();
                self.log.warn(&self.address, reason, frames.len(), bytes);
            }
        }
    }
}

/// Why a connected session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// The exporter is stopping.
    Shutdown,
    /// The transport reported the peer gone (disconnect, or a receive error).
    PeerGone,
    /// Nothing arrived for [`SubscriberConfig::silence_timeout`]: presumed half-open.
    Silent,
}

/// Runs the subscriber of one endpoint until `shutdown` turns true.
pub async fn run(
    registry: Arc<Registry>,
    stats: Arc<EndpointStats>,
    config: SubscriberConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let address = stats.address.clone();
    let mut ingest = Ingest {
        registry,
        stats: stats.clone(),
        address: address.clone(),
        tracker: SequenceTracker::default(),
        cache: RankCache::default(),
        log: RateLimited::new(),
    };
    stats.started.store(true, Relaxed);
    let mut retry = config.retry_min;
    while !*shutdown.borrow() {
        let mut options = SocketOptions::default();
        options.connect_timeout(config.connect_timeout);
        let mut socket = SubSocket::with_options(options);
        ingest.new_connection();
        // Made before connecting so that no disconnect can go unreported.
        let mut events = socket.monitor();
        let attempt = async {
            socket.connect(&address).await?;
            // A peer can complete the handshake and drop before the subscription goes
            // out; that is a failed attempt like any other, so it backs off too.
            socket.subscribe("").await
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = shutdown.changed() => return,
        };
        match connected {
            Err(e) => {
                tracing::debug!(endpoint = %address, error = %e, "connect or subscribe failed; will retry");
            }
            Ok(()) => {
                stats.connects.fetch_add(1, Relaxed);
                stats.connected.store(true, Relaxed);
                tracing::debug!(endpoint = %address, "connected");
                let (end, received) = session(
                    &mut socket,
                    &mut events,
                    &mut ingest,
                    &config,
                    &mut shutdown,
                )
                .await;
                stats.connected.store(false, Relaxed);
                if end == SessionEnd::Shutdown {
                    return;
                }
                tracing::debug!(endpoint = %address, reason = ?end, received, "re-creating the socket");
                // Only a session that carried data proves the peer healthy; a peer that
                // accepts and drops again and again is retried ever more slowly.
                if received > 0 {
                    retry = config.retry_min;
                }
            }
        }
        // Every attempt, failed or ended, pauses before the next: never a tight loop.
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.changed() => return,
        }
        retry = (retry * 2).min(config.retry_max);
    }
}

/// Receives on a connected socket until shutdown, the peer goes, or a long silence.
/// Returns why it ended and how many messages it received.
async fn session(
    socket: &mut SubSocket,
    events: &mut futures::channel::mpsc::Receiver<SocketEvent>,
    ingest: &mut Ingest,
    config: &SubscriberConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> (SessionEnd, u64) {
    let stats = ingest.stats.clone();
    let address = ingest.address.clone();
    let mut received = 0u64;
    // Silence alone only makes the rank stale (the sweeper's job); the socket is
    // re-created after the longer `silence_timeout`, so a long forward pass without
    // heartbeats keeps its connection and the frame that ends it is not lost.
    // One timer for the session, moved only when it fires: resetting it per message
    // cost a timer-wheel insert and removal per frame, the most of anything at low
    // rates after the transport's own wakeups.
    let mut last_rx = tokio::time::Instant::now();
    let silence = tokio::time::sleep(config.silence_timeout);
    tokio::pin!(silence);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return (SessionEnd::Shutdown, received),
            ev = events.next() => match ev {
                Some(SocketEvent::Disconnected(_)) | None => return (SessionEnd::PeerGone, received),
                Some(_) => ingest.new_connection(),
            },
            r = socket.recv() => match r {
                Ok(msg) => {
                    last_rx = tokio::time::Instant::now();
                    ingest.handle(msg);
                    received += 1;
                    // Take what is already queued without re-arming the select's
                    // shutdown and timer futures for every message (they cost more
                    // than decoding under load); bounded, so shutdown stays prompt.
                    for _ in 0..DRAIN_BATCH {
                        match socket.recv().now_or_never() {
                            Some(Ok(msg)) => {
                                ingest.handle(msg);
                                received += 1;
                            }
                            Some(Err(e)) => {
                                stats.receive_errors.fetch_add(1, Relaxed);
                                tracing::debug!(endpoint = %address, error = %e, "receive error");
                                return (SessionEnd::PeerGone, received);
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => {
                    // The crate reports a lost peer this way too; reconnecting here,
                    // with this loop's backoff, beats the crate's own (up to 30 s).
                    stats.receive_errors.fetch_add(1, Relaxed);
                    tracing::debug!(endpoint = %address, error = %e, "receive error");
                    return (SessionEnd::PeerGone, received);
                }
            },
            _ = &mut silence => {
                let deadline = last_rx + config.silence_timeout;
                if tokio::time::Instant::now() >= deadline {
                    return (SessionEnd::Silent, received);
                }
                silence.as_mut().reset(deadline);
            }
        }
    }
}
