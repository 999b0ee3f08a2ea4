//! NATS source: Dynamo's event plane. Subscribes to the FPM subjects
//! (`namespace.*.component.*.endpoint.*.forward-pass-metrics` by default), unwraps
//! Dynamo's envelope, decodes the FPM inside with the same decoder as ZMQ frames and
//! folds it into the registry. Each subject scope becomes an engine; sequence
//! accounting keys on the envelope's publisher, since many publishers share a subject.

pub mod config;
pub mod counter;
pub mod envelope;
pub mod ingest;
pub mod queue;
pub mod subject;

use crate::wire::DecodeError;

/// The NATS header naming the node a relayed message comes from. Dynamo's subscribers
/// read only the message body, so the envelope stays byte for byte Dynamo's.
pub const NODE_HEADER: &str = "Fpm-Node";

/// The label carrying a node's identity on the series of its ranks, at the edge and
/// at the central exporter alike.
pub const NODE_LABEL: &str = "node";
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Why a NATS message was not ingested (before or around the FPM decoder's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Larger than [`ingest::MAX_MESSAGE_BYTES`].
    Oversize,
    /// The subject is not a well-formed FPM subject.
    Subject,
    /// Not a MessagePack envelope map with the right field types.
    EnvelopeMalformed,
    /// An envelope field is missing.
    EnvelopeMissingField,
    /// The envelope's topic is not `forward-pass-metrics`.
    WrongTopic,
    /// A new subject scope while the engine table is full.
    EngineLimit,
    /// A new publisher while [`ingest::MAX_PUBLISHERS`] are tracked.
    PublisherLimit,
    /// A [`NODE_HEADER`] that is empty or longer than a label value may be.
    Node,
    /// Published longer ago than the frame-age bound (`--nats-max-frame-age`): a
    /// stalled path delivered it late, or the publisher's clock is wrong.
    Stale,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 9] = [
        Reject::Oversize,
        Reject::Subject,
        Reject::EnvelopeMalformed,
        Reject::EnvelopeMissingField,
        Reject::WrongTopic,
        Reject::EngineLimit,
        Reject::PublisherLimit,
        Reject::Node,
        Reject::Stale,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Oversize => "oversize",
            Reject::Subject => "subject",
            Reject::EnvelopeMalformed => "envelope_malformed",
            Reject::EnvelopeMissingField => "envelope_missing_field",
            Reject::WrongTopic => "wrong_topic",
            Reject::EngineLimit => "engine_limit",
            Reject::PublisherLimit => "publisher_limit",
            Reject::Node => "node",
            Reject::Stale => "stale",
        }
    }
}

/// The `reason` label of an FPM decode failure inside a valid envelope.
pub fn payload_reason(e: DecodeError) -> &'static str {
    match e {
        DecodeError::FrameCount => "payload_frame_count",
        DecodeError::SequenceSize => "payload_sequence_size",
        DecodeError::EmptyPayload => "payload_empty_payload",
        DecodeError::Oversize => "payload_oversize",
        DecodeError::Truncated => "payload_truncated",
        DecodeError::Malformed => "payload_malformed",
        DecodeError::WrongShape => "payload_wrong_shape",
        DecodeError::InvalidValue => "payload_invalid_value",
        DecodeError::TooDeep => "payload_too_deep",
        DecodeError::TrailingBytes => "payload_trailing_bytes",
        DecodeError::UnsupportedVersion => "payload_unsupported_version",
    }
}

/// Counters of one NATS connection (ingest or publish).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Whether this connection is configured.
    pub enabled: AtomicBool,
    /// Connected now.
    pub connected: AtomicBool,
    /// Connections established (the first and every reconnect).
    pub connects: AtomicU64,
    /// Disconnections noticed.
    pub disconnects: AtomicU64,
    /// Errors the client reported: failed connection attempts, server errors.
    pub errors: AtomicU64,
}

/// Everything the NATS side counts; read by the Prometheus sink.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// The ingest connection.
    pub ingest: ConnStats,
    /// The publish connection.
    pub publish: ConnStats,
    /// Messages received on the FPM subscription, valid or not.
    pub messages: AtomicU64,
    /// Frames folded into the registry.
    pub ingested: AtomicU64,
    /// Messages refused before the FPM decoder, by [`Reject`].
    pub rejected: [AtomicU64; Reject::ALL.len()],
    /// Valid envelopes whose FPM payload failed to decode, by [`DecodeError`].
    pub payload_errors: [AtomicU64; DecodeError::ALL.len()],
    /// Envelope fields this build does not know (ignored, as Dynamo does).
    pub unknown_envelope_fields: AtomicU64,
    /// Messages lost upstream: gaps in a publisher's envelope sequence.
    pub missed_messages: AtomicU64,
    /// Messages dropped because ingest fell behind (slow consumer): the overflow of
    /// ingest's queue, counted one by one, plus the client's own, read from its
    /// connection statistics (see [`queue`]).
    pub slow_consumer: AtomicU64,
    /// Publishers tracked now.
    pub publishers: AtomicU64,
    /// Our own relayed messages seen on the subscription and skipped.
    pub own_messages: AtomicU64,
    /// Frames handed to the connected NATS client by the relay.
    pub relayed: AtomicU64,
    /// Accepted frames the relay could not send: it fell behind ingestion.
    pub relay_dropped_lagged: AtomicU64,
    /// Accepted frames the relay could not send: the client refused them.
    pub relay_dropped_error: AtomicU64,
    /// Accepted frames dropped because the publish connection was down.
    pub relay_dropped_disconnected: AtomicU64,
    /// Accepted frames dropped because the client's outgoing queue was full.
    pub relay_dropped_full: AtomicU64,
    /// Accepted frames dropped because they were older than the frame-age bound when
    /// the relay reached them.
    pub relay_dropped_stale: AtomicU64,
    /// KV puts done.
    pub kv_updates: AtomicU64,
    /// KV puts or bucket creations that failed.
    pub kv_errors: AtomicU64,
    /// Load updates not written because the KV writer fell behind ingestion.
    pub kv_dropped_lagged: AtomicU64,
    /// Engines (by index) whose messages an edge relayed (they name a node).
    pub relayed_engines: std::sync::RwLock<Vec<bool>>,
    /// Leave the relayed engines out of `/metrics` ([`config::RelayedSeries::Edge`]).
    pub hide_relayed: AtomicBool,
}

impl NatsStats {
    /// Counts a refused message.
    pub fn reject(&self, r: Reject) {
        self.rejected[r as usize].fetch_add(1, Relaxed);
    }

    /// Notes that engine `engine` carries ranks an edge relayed.
    pub fn mark_relayed(&self, engine: usize) {
        let mut v = self
            .relayed_engines
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if v.len() <= engine {
            v.resize(engine + 1, false);
        }
        v[engine] = true;
    }

    /// The engines `/metrics` leaves out, by index (empty: none).
    pub fn hidden_engines(&self) -> Vec<bool> {
        if !self.hide_relayed.load(Relaxed) {
            return Vec::new();
        }
        self.relayed_engines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Keeps a connection's gauges in step with async-nats's events, and logs them. The
/// client retries a refused connection for ever, several times a second: the first
/// failure is logged with what to check, then one summary a minute at most (async-nats's
/// own per-attempt lines are off by default, see `main.rs`).
pub fn event_callback(
    stats: std::sync::Arc<NatsStats>,
    publish: bool,
) -> impl Fn(
    async_nats::Event,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>
       + Send
       + Sync
       + 'static {
    let role = if publish { "publish" } else { "ingest" };
    let errors = std::sync::Mutex::new(LogEvery::new(ERROR_LOG_EVERY));
    move |event| {
        let conn = if publish {
            &stats.publish
        } else {
            &stats.ingest
        };
        match event {
            async_nats::Event::Connected => {
                conn.connected.store(true, Relaxed);
                conn.connects.fetch_add(1, Relaxed);
                let mut log = errors.lock().expect("log limiter");
                let failed = log.take();
                tracing::info!(role, failed_attempts = failed, "nats connected");
            }
            async_nats::Event::Disconnected => {
                conn.connected.store(false, Relaxed);
                conn.disconnects.fetch_add(1, Relaxed);
                tracing::warn!(role, "nats disconnected; reconnecting");
            }
            // The client's own overflow: counted exactly from its statistics by
            // `queue::forward` (these events are themselves dropped under a flood).
            async_nats::Event::SlowConsumer(_) => {}
            async_nats::Event::ClientError(e) => {
                conn.errors.fetch_add(1, Relaxed);
                log_error(&errors, role, &e.to_string());
            }
            async_nats::Event::ServerError(e) => {
                conn.errors.fetch_add(1, Relaxed);
                log_error(&errors, role, &e.to_string());
            }
            other => tracing::debug!(role, event = %other, "nats event"),
        }
        Box::pin(async {})
    }
}

/// Least time between two log lines about a connection's repeated errors.
pub const ERROR_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn log_error(limiter: &std::sync::Mutex<LogEvery>, role: &str, error: &str) {
    let mut log = limiter.lock().expect("log limiter");
    let first = log.is_first();
    let held = log.suppressed;
    if !log.due() {
        return;
    }
    let auth = error.contains("authorization") || error.contains("signing");
    if first && auth {
        tracing::error!(
            role,
            error,
            "nats refused the credentials; check --nats-token-file, --nats-user/--nats-password-file, --nats-nkey-file or --nats-creds-file (retrying, this is logged once a minute at most)"
        );
    } else if first {
        tracing::warn!(
            role,
            error,
            "nats connection failed; check the URL, TLS settings and that the server is up (retrying; RUST_LOG=async_nats=debug for details; logged once a minute at most)"
        );
    } else {
        tracing::warn!(
            role,
            error,
            failed_attempts = held + 1,
            "nats still failing since the last report"
        );
    }
}

/// Lets a repeated log line through at most once per interval (a flood of NATS errors
/// or slow-consumer events must not flood the log).
#[derive(Debug)]
pub struct LogEvery {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    /// Lines held back since the last one let through.
    pub suppressed: u64,
    /// Events since `reset` (or the start), let through or not.
    total: u64,
}

impl LogEvery {
    /// A limiter letting one line through per `every`.
    pub fn new(every: std::time::Duration) -> Self {
        LogEvery {
            every,
            last: None,
            suppressed: 0,
            total: 0,
        }
    }

    /// Whether nothing was seen since the start or the last [`LogEvery::take`].
    pub fn is_first(&self) -> bool {
        self.total == 0
    }

    /// Starts over (the next line is a first again); returns the events seen since.
    pub fn take(&mut self) -> u64 {
        let n = self.total;
        *self = LogEvery::new(self.every);
        n
    }

    /// Whether to log now (starting a new quiet period); counts a held-back line otherwise.
    pub fn due(&mut self) -> bool {
        self.total += 1;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return false;
        }
        self.last = Some(now);
        self.suppressed = 0;
        true
    }
}

/// Polls `f` once, ignoring the task's coop budget: `Some` if it is ready now.
///
/// A bare `now_or_never` is not enough for "is there room / a message now": once a task
/// has taken about 128 ready results from tokio resources without yielding (a relay
/// working through a burst of frames), every tokio resource says Pending, and a frame
/// would be dropped as `full` with the queue nearly empty.
pub fn poll_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    use futures::FutureExt;
    tokio::task::unconstrained(f).now_or_never()
}

#[cfg(test)]
mod poll_now_tests {
    use super::poll_now;
    use futures::FutureExt;

    #[tokio::test(flavor = "current_thread")]
    async fn a_spent_coop_budget_is_not_taken_for_a_full_queue() {
        let (events, mut rx) = tokio::sync::broadcast::channel(1024);
        for i in 0..512 {
            events.send(i).unwrap();
        }
        // A relay's burst: many ready events taken without yielding.
        for _ in 0..512 {
            if rx.recv().now_or_never().is_none() {
                break;
            }
        }
        let (tx, _keep) = tokio::sync::mpsc::channel::<u32>(16);
        assert!(
            tx.send(1).now_or_never().is_none(),
            "premise: with the budget spent, tokio says Pending with room in the queue"
        );
        assert_eq!(poll_now(tx.send(2)).map(|r| r.is_ok()), Some(true));
    }
}
