//! The event stream behind `GET /v1/stream` (server-sent events).
//!
//! Every accepted frame and every liveness change is broadcast once into a bounded
//! ring; each client reads it at its own pace. A client that falls behind never
//! slows ingestion: it skips ahead and is told how many events it missed
//! (`event: lagged`). In sampling mode a client instead gets one `snapshot` event per
//! rank per interval, plus the liveness changes.

use crate::sink::json::{window_names, RankJson};
use crate::state::{Event, EventKind, RankFilter, Registry};
use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

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
    /// `frame`, `state`, `snapshot` or `lagged`.
    pub event: &'static str,
    /// The JSON document.
    pub data: Bytes,
}

/// The JSON of an event, rendered once and shared by every client.
pub fn event_json(registry: &Registry, ev: &Event) -> Bytes {
    ev.json
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
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    ticker: Option<tokio::time::Interval>,
    pending: std::collections::VecDeque<StreamMessage>,
}

impl ClientStream {
    /// Subscribes a new client.
    pub fn new(registry: Arc<Registry>, options: StreamOptions) -> Self {
        let rx = registry.subscribe();
        let ticker = options.interval.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        ClientStream {
            registry,
            options,
            rx,
            ticker,
            pending: Default::default(),
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

    fn snapshot_messages(&mut self) {
        let snap = self.registry.snapshot(&self.options.filter);
        let names = window_names(&self.registry);
        for r in &snap.ranks {
            let json = serde_json::to_vec(&RankJson::new(&self.registry, r, &names))
                .expect("JSON of plain data cannot fail");
            self.pending.push_back(StreamMessage {
                event: "snapshot",
                data: json.into(),
            });
        }
    }

    /// The next message for this client; `None` once the exporter shuts down.
    pub async fn next(&mut self) -> Option<StreamMessage> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            let tick = async {
                match self.ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(ev) => {
                        if self.wants(&ev) {
                            let event = match ev.kind {
                                EventKind::Frame { .. } => "frame",
                                EventKind::State { .. } => "state",
                            };
                            return Some(StreamMessage { event, data: event_json(&self.registry, &ev) });
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let data = format!("{{\"missed\":{missed}}}");
                        return Some(StreamMessage { event: "lagged", data: data.into() });
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tick => self.snapshot_messages(),
            }
        }
    }
}
