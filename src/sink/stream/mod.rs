//! The event stream behind `GET /v1/stream` (server-sent events).
//!
//! Every accepted frame and every liveness change is broadcast once into a bounded
//! ring, relayed to the clients by the [`hub`]; each client reads it at its own pace. A client that falls behind never
//! slows ingestion: it skips ahead and is told how many events it missed
//! (`event: lagged`). In sampling mode a client instead gets one `snapshot` event per
//! rank and one `engine_snapshot` per engine each interval, plus the liveness changes.

pub mod hub;
pub mod snapshots;

use crate::state::{Event, EventKind, RankFilter, Registry};
use bytes::Bytes;
use hub::{ClientHold, Relayed, StreamHub};
use serde::Serialize;
use snapshots::Snapshots;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// What a client asked for.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Which ranks.
    pub filter: RankFilter,
    /// Sampling interval: one snapshot per rank per interval instead of every frame.
    pub interval: Option<Duration>,
    /// Whether heartbeat frames are streamed (default true).
    pub heartbeats: bool,
}

/// One SSE message: its event name and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMessage {
    /// `frame`, `state`, `snapshot`, `engine_snapshot` or `lagged`.
    pub event: &'static str,
    /// The JSON document.
    pub data: Bytes,
}

/// The JSON of an event, rendered once into `cache` and shared by every client.
fn event_json(registry: &Registry, ev: &Event, cache: &std::sync::OnceLock<Bytes>) -> Bytes {
    cache
        .get_or_init(|| {
            let engine = &registry.engines[ev.key.engine].name;
            let v = match &ev.kind {
                EventKind::Frame {
                    sequence,
                    received_at_ns,
                    metrics,
                } => {
                    #[derive(Serialize)]
                    struct F<'a> {
                        engine: &'a str,
                        worker_id: &'a str,
                        dp_rank: u64,
                        sequence: u64,
                        received_at_ns: u64,
                        metrics: &'a crate::wire::ForwardPassMetrics,
                    }
                    serde_json::to_vec(&F {
                        engine,
                        worker_id: &ev.key.worker_id,
                        dp_rank: ev.key.dp_rank,
                        sequence: *sequence,
                        received_at_ns: *received_at_ns,
                        metrics,
                    })
                }
                EventKind::State { from, to, at_ns } => {
                    #[derive(Serialize)]
                    struct S<'a> {
                        engine: &'a str,
                        worker_id: &'a str,
                        dp_rank: u64,
                        from: crate::state::rank::Liveness,
                        to: crate::state::rank::Liveness,
                        at_ns: u64,
                    }
                    serde_json::to_vec(&S {
                        engine,
                        worker_id: &ev.key.worker_id,
                        dp_rank: ev.key.dp_rank,
                        from: *from,
                        to: *to,
                        at_ns: *at_ns,
                    })
                }
            };
            Bytes::from(v.expect("JSON of plain data cannot fail"))
        })
        .clone()
}

/// Turns the broadcast into this client's messages, one `next()` at a time.
pub struct ClientStream {
    registry: Arc<Registry>,
    options: StreamOptions,
    rx: tokio::sync::broadcast::Receiver<Arc<Relayed>>,
    /// Keeps the hub's relay running while this client lives.
    _hold: ClientHold,
    ticker: Option<tokio::time::Interval>,
    pending: std::collections::VecDeque<StreamMessage>,
    snapshots: Arc<Snapshots>,
    drain: tokio::time::Interval,
}

impl ClientStream {
    /// Subscribes a new client; its snapshot events (if any) come from `snapshots`.
    pub fn new(hub: &Arc<StreamHub>, options: StreamOptions, snapshots: Arc<Snapshots>) -> Self {
        let (rx, hold) = hub.subscribe();
        let registry = hub.registry().clone();
        let ticker = options.interval.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        ClientStream {
            registry,
            options,
            rx,
            _hold: hold,
            ticker,
            pending: Default::default(),
            snapshots,
            drain: {
                let mut t = tokio::time::interval(SAMPLING_DRAIN);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                t
            },
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        if !self.options.filter.matches(&self.registry, &ev.key) {
            return false;
        }
        match &ev.kind {
            EventKind::State { .. } => true,
            EventKind::Frame { metrics, .. } => {
                self.ticker.is_none() && (self.options.heartbeats || !metrics.is_heartbeat())
            }
        }
    }

    async fn snapshot_messages(&mut self) {
        let wait = self.options.interval.unwrap_or(Duration::from_secs(1));
        let rendered = self
            .snapshots
            .get(&self.registry, &self.options.filter, wait)
            .await;
        self.pending
            .extend(rendered.iter().flat_map(|r| r.iter().cloned()));
    }

    /// The next message for this client; `None` once the exporter shuts down.
    pub async fn next(&mut self) -> Option<StreamMessage> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            if self.ticker.is_some() {
                self.sample().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if let Some(m) = self.message(&ev) {
                        return Some(m);
                    }
                }
                Err(RecvError::Lagged(missed)) => return Some(lagged(missed)),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn message(&self, relayed: &Relayed) -> Option<StreamMessage> {
        let (ev, json) = match relayed {
            Relayed::Event { event, json } => (event, json),
            Relayed::Lagged(missed) => return Some(lagged(*missed)),
        };
        if !self.wants(ev) {
            return None;
        }
        let event = match ev.kind {
            EventKind::Frame { .. } => "frame",
            EventKind::State { .. } => "state",
        };
        Some(StreamMessage {
            event,
            data: event_json(&self.registry, ev, json),
        })
    }

    /// Sampling mode: waits for the interval or the next look at the ring, and queues
    /// what is due. A sampling client skips every frame event, so it must not be woken
    /// for each one (256 such clients at thousands of frames a second would keep the
    /// async workers busy); it looks at the ring every [`SAMPLING_DRAIN`] instead.
    async fn sample(&mut self) -> Option<()> {
        let ticker = self.ticker.as_mut()?;
        let snapshot = tokio::select! {
            _ = ticker.tick() => true,
            _ = self.drain.tick() => false,
        };
        self.drain_ring()?;
        if snapshot {
            self.snapshot_messages().await;
        }
        Some(())
    }

    /// Queues the wanted events already in the ring (liveness changes).
    fn drain_ring(&mut self) -> Option<()> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => {
                    if let Some(m) = self.message(&ev) {
                        self.pending.push_back(m);
                    }
                }
                Err(TryRecvError::Empty) => return Some(()),
                Err(TryRecvError::Lagged(missed)) => self.pending.push_back(lagged(missed)),
                Err(TryRecvError::Closed) => return None,
            }
        }
    }
}

/// How often a sampling client looks at the event ring for liveness changes; at 16,384
/// events of ring this keeps up with 160,000 frames a second.
pub const SAMPLING_DRAIN: Duration = Duration::from_millis(100);

fn lagged(missed: u64) -> StreamMessage {
    let data = format!("{{\"missed\":{missed}}}");
    StreamMessage {
        event: "lagged",
        data: data.into(),
    }
}
