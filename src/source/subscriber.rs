//! One ZMQ SUB socket per rank endpoint, each in its own task: a stuck or noisy rank
//! never delays another.
//!
//! The `zeromq` crate reconnects by itself, but with a backoff that grows to 30 s and
//! without noticing half-open connections. So this loop owns liveness: when a
//! connected socket has been silent for the stale timeout (a live publisher sends a
//! heartbeat every second), it drops the socket and connects afresh, retrying at
//! most every [`SubscriberConfig::retry_max`].

use crate::state::endpoint::EndpointStats;
use crate::state::sequence::SequenceTracker;
use crate::state::{RankCache, Registry};
use crate::wire::decode::{decode_payload, decode_sequence};
use crate::wire::DecodeError;
use futures::FutureExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

/// Most messages taken in one go once the socket has woken up.
const DRAIN_BATCH: usize = 256;

/// Timing of connection attempts.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// How long one connect attempt may take before it is abandoned and retried.
    pub connect_timeout: Duration,
    /// First pause between failed connect attempts; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest pause between connect attempts (bounds recovery after an outage).
    pub retry_max: Duration,
    /// Silence on a connected socket after which it is re-created.
    pub silence_timeout: Duration,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            connect_timeout: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            silence_timeout: Duration::from_secs(3),
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
    /// Connection events of the current socket: a peer that connected or left means
    /// the next frame may come from another publisher instance.
    peer_events: Option<futures::channel::mpsc::Receiver<SocketEvent>>,
    cache: RankCache,
    log: RateLimited,
}

impl Ingest {
    /// Starts sequence accounting afresh for a new socket (see `proto/sequence.md`).
    fn watch(&mut self, socket: &mut SubSocket) {
        self.peer_events = Some(socket.monitor());
        self.tracker.on_reconnect();
    }

    fn handle(&mut self, msg: ZmqMessage) {
        self.stats.messages.fetch_add(1, Relaxed);
        if let Some(events) = &mut self.peer_events {
            while events.try_recv().is_ok() {
                self.tracker.on_reconnect();
            }
        }
        let now = self.registry.now();
        let frames = msg.into_vec();
        let result = match frames.as_slice() {
            [_topic, seq, payload] => decode_sequence(seq).and_then(|sequence| {
                // Account for the sequence even when the payload is bad, so a skipped
                // frame is not also reported as a lost one.
                let event = self.tracker.observe(sequence, now.instant);
                decode_payload(payload).map(|m| (sequence, event, m))
            }),
            _ => Err(DecodeError::FrameCount),
        };
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
        peer_events: None,
        cache: RankCache::default(),
        log: RateLimited::new(),
    };
    stats.started.store(true, Relaxed);
    let mut retry = config.retry_min;
    while !*shutdown.borrow() {
        let mut options = SocketOptions::default();
        options.connect_timeout(config.connect_timeout);
        let mut socket = SubSocket::with_options(options);
        ingest.watch(&mut socket);
        let connected = tokio::select! {
            r = socket.connect(&address) => r,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = connected {
            tracing::debug!(endpoint = %address, error = %e, "connect failed; will retry");
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.changed() => return,
            }
            retry = (retry * 2).min(config.retry_max);
            continue;
        }
        if let Err(e) = socket.subscribe("").await {
            tracing::debug!(endpoint = %address, error = %e, "subscribe failed; will retry");
            continue;
        }
        retry = config.retry_min;
        stats.connects.fetch_add(1, Relaxed);
        stats.connected.store(true, Relaxed);
        tracing::debug!(endpoint = %address, "connected");
        let mut deadline = tokio::time::Instant::now() + config.silence_timeout;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    stats.connected.store(false, Relaxed);
                    return;
                }
                r = socket.recv() => match r {
                    Ok(msg) => {
                        deadline = tokio::time::Instant::now() + config.silence_timeout;
                        ingest.handle(msg);
                        // Take what is already queued without re-arming the select's
                        // shutdown and timer futures for every message (they cost more
                        // than decoding under load); bounded, so shutdown stays prompt.
                        for _ in 0..DRAIN_BATCH {
                            match socket.recv().now_or_never() {
                                Some(Ok(msg)) => ingest.handle(msg),
                                Some(Err(e)) => {
                                    stats.receive_errors.fetch_add(1, Relaxed);
                                    tracing::debug!(endpoint = %address, error = %e, "receive error");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    Err(e) => {
                        // A drop is noticed here; the socket reconnects on its own, and
                        // the silence timeout covers the case where it does not.
                        stats.receive_errors.fetch_add(1, Relaxed);
                        tracing::debug!(endpoint = %address, error = %e, "receive error");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(endpoint = %address, "silent; re-creating the socket");
                    break;
                }
            }
        }
        stats.connected.store(false, Relaxed);
    }
}
