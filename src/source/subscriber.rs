//! One ZMQ SUB connection per rank endpoint, each owned by its own task: a rank that
//! cannot be reached or breaks the protocol never delays another. The task connects
//! (the hand-rolled ZMTP client of [`super::zmtp`], see there why), then hands the
//! connected socket and its ingest to the shared [`super::receiver`] thread, which
//! reads every connected socket in rounds and feeds each ingest directly; the ingest
//! comes back with why the session ended.
//!
//! This loop owns reconnection: when the peer goes, breaks the protocol, or a connected
//! stream has been silent for the (long) re-create timeout, it drops the connection and
//! connects afresh, pausing between attempts from [`SubscriberConfig::retry_min`]
//! doubling to `retry_max`.
//!
//! Being stale is a different thing: a state shown to users after `--stale-after` of
//! silence, decided by the registry's sweeper. A busy engine sends no heartbeats
//! during a long forward pass, so silence alone is weak evidence of a dead peer; the
//! connection is kept until the longer `--reconnect-after`.

use super::endpoint::EndpointStats;
use super::receiver::{End, Handler, Receiver};
use super::sequence::SequenceTracker;
use super::zmtp::{HandshakeFailure, Subscription, ZmtpError};
use crate::state::{RankCache, Registry};
use crate::wire::decode::{decode_payload, split_message};
use crate::wire::DecodeError;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Default of `--reconnect-after`: long enough for any forward pass, short enough to
/// leave a half-open connection within a minute.
pub const DEFAULT_RECONNECT_AFTER: Duration = Duration::from_secs(30);

/// Timing of connection attempts.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// How long one connect attempt (transport and ZMTP handshake) may take before it
    /// is abandoned and retried.
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

    /// Whether to log now; counts the suppressed ones otherwise.
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::INTERVAL)
        {
            self.suppressed += 1;
            return false;
        }
        true
    }

    fn logged(&mut self) {
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }

    fn warn(&mut self, address: &str, reason: DecodeError, frames: usize, bytes: usize) {
        if !self.due() {
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
        self.logged();
    }

    fn protocol(&mut self, address: &str, error: &ZmtpError) {
        if !self.due() {
            return;
        }
        match error.handshake_reason() {
            Some(HandshakeFailure::Security) => tracing::warn!(
                endpoint = address,
                %error,
                suppressed = self.suppressed,
                "publisher refused the NULL mechanism: it is configured with ZMQ security (CURVE or PLAIN), which fpm-exporter does not speak; publish FPM without it, on ipc or loopback (docs/operations.md); retrying"
            ),
            Some(HandshakeFailure::Denied) => tracing::warn!(
                endpoint = address,
                %error,
                suppressed = self.suppressed,
                "publisher refused the connection (ZMTP ERROR, e.g. its ZAP handler); retrying"
            ),
            _ => tracing::warn!(
                endpoint = address,
                %error,
                suppressed = self.suppressed,
                "peer broke the ZMTP protocol; reconnecting"
            ),
        }
        self.logged();
    }
}

/// Per-endpoint ingest: decodes every message and folds it into the registry.
pub struct Ingest {
    registry: Arc<Registry>,
    stats: Arc<EndpointStats>,
    address: Arc<str>,
    tracker: SequenceTracker,
    cache: RankCache,
    log: RateLimited,
    /// Protocol violations (a separate limit, so bad frames cannot hide them).
    protocol_log: RateLimited,
}

impl Ingest {
    /// Notes a new connection: the next frame may follow frames sent into no
    /// connection, or (`new_instance`, the publisher was seen gone) come from another
    /// publisher instance (see `proto/sequence.md`).
    fn new_connection(&mut self, new_instance: bool) {
        self.tracker.on_reconnect(new_instance);
    }

    fn handle(&mut self, frames: &[&[u8]]) {
        self.stats.messages.fetch_add(1, Relaxed);
        let now = self.registry.now();
        let result = split_message(frames).and_then(|(sequence, payload)| {
            // Account for the sequence even when the payload is bad, so a skipped
            // frame is not also reported as a lost one.
            let event = self.tracker.observe(sequence);
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

impl Handler for Ingest {
    fn message(&mut self, parts: &[&[u8]]) {
        self.handle(parts);
    }
}

/// The receiver every endpoint's connected socket is read by.
pub type EndpointReceiver = Receiver<Ingest>;

/// Runs the subscriber of one endpoint until `shutdown` turns true.
pub async fn run(
    registry: Arc<Registry>,
    stats: Arc<EndpointStats>,
    config: SubscriberConfig,
    receiver: Arc<EndpointReceiver>,
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
        protocol_log: RateLimited::new(),
    };
    stats.started.store(true, Relaxed);
    let mut retry = config.retry_min;
    // Evidence that the publisher went away since the last session: its address
    // refused a connection, or its ipc socket file is another one.
    let mut seen_gone = false;
    let mut ipc_file = None;
    while !*shutdown.borrow() {
        // A peer can complete the handshake and drop before the subscription goes
        // out; that is a failed attempt like any other, so it backs off too.
        let connected = tokio::select! {
            r = Subscription::connect(&address, config.connect_timeout) => r,
            _ = shutdown.changed() => return,
        };
        match connected {
            Err(e) => {
                seen_gone |= matches!(
                    e,
                    ZmtpError::Io(
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    )
                );
                if let Some(reason) = e.handshake_reason() {
                    stats.handshake_failures[reason.index()].fetch_add(1, Relaxed);
                }
                if e.is_protocol() {
                    stats.receive_errors.fetch_add(1, Relaxed);
                    ingest.protocol_log.protocol(&address, &e);
                }
                tracing::debug!(endpoint = %address, error = %e, "connect or handshake failed; will retry");
            }
            Ok(sub) => {
                let file = ipc_socket_file(&address);
                seen_gone |= ipc_file.is_some() && file.is_some() && file != ipc_file;
                ipc_file = file.or(ipc_file);
                ingest.new_connection(std::mem::take(&mut seen_gone));
                stats.connects.fetch_add(1, Relaxed);
                stats.connected.store(true, Relaxed);
                tracing::debug!(endpoint = %address, "connected");
                // The receiver gives the ingest back when the session ends; it refuses
                // (or drops the session) only once the exporter is stopping.
                let Ok(done) = receiver.add(sub, ingest) else {
                    stats.connected.store(false, Relaxed);
                    return;
                };
                let ended = tokio::select! {
                    r = done => r.ok(),
                    _ = shutdown.changed() => None,
                };
                stats.connected.store(false, Relaxed);
                let Some(ended) = ended else {
                    return;
                };
                ingest = ended.handler;
                match &ended.reason {
                    End::PeerGone(failure) => {
                        // A clean close at a message boundary loses nothing; anything
                        // else is an error.
                        if !matches!(failure, ZmtpError::Closed) {
                            stats.receive_errors.fetch_add(1, Relaxed);
                        }
                        if failure.is_protocol() {
                            ingest.protocol_log.protocol(&address, failure);
                        }
                    }
                    End::Silent => {}
                }
                tracing::debug!(endpoint = %address, reason = ?ended.reason, received = ended.received, "re-creating the connection");
                // Only a session that carried data proves the peer healthy; a peer that
                // accepts and drops again and again is retried ever more slowly.
                if ended.received > 0 {
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

/// Which ipc socket file an endpoint's address names: a publisher that binds again
/// (a restart) makes a new one. Its change time goes with the inode, which a file
/// system may give again to the next file.
fn ipc_socket_file(address: &str) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let path = address.strip_prefix("ipc://")?;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.ctime(), meta.ctime_nsec()))
}
