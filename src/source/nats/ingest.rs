//! The subscription loop: one task for every FPM subject of the cluster. Each message
//! is handled in microseconds and nothing here waits on a rank, so one noisy publisher
//! cannot hold up another beyond its own messages.

use super::envelope::{self, EnvelopeError};
use super::subject::{Scope, FPM_TOPIC};
use super::{NatsStats, Reject};
use crate::source::sequence::SequenceTracker;
use crate::state::{EngineInfo, RankCache, Registry};
use crate::wire::decode::decode_payload;
use crate::wire::MAX_PAYLOAD_BYTES;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest message taken: the FPM payload limit plus room for the envelope.
pub const MAX_MESSAGE_BYTES: usize = MAX_PAYLOAD_BYTES + 1024;

/// Most publishers tracked at once (each a sequence tracker and a rank cache).
pub const MAX_PUBLISHERS: usize = 16_384;

/// Label names of the subject scope on a NATS engine's series. Not `endpoint`: the
/// exporter uses that label for ZMQ endpoint series.
pub const SCOPE_LABELS: [&str; 3] = ["dynamo_namespace", "dynamo_component", "dynamo_endpoint"];

struct Publisher {
    tracker: SequenceTracker,
    cache: RankCache,
    seen: Instant,
}

struct Scoped {
    engine: usize,
    subject: Arc<str>,
}

/// Ingest state of the subscription (owned by its one task).
pub struct Ingest {
    registry: Arc<Registry>,
    stats: Arc<NatsStats>,
    scopes: HashMap<String, Scoped>,
    publishers: HashMap<(usize, u64), Publisher>,
    own_ids: Arc<HashSet<u64>>,
    last_prune: Instant,
}

impl Ingest {
    /// Ingest into `registry`, skipping envelopes of the publishers in `own_ids` (our
    /// own relay, when it publishes to the same server).
    pub fn new(registry: Arc<Registry>, stats: Arc<NatsStats>, own_ids: Arc<HashSet<u64>>) -> Self {
        Ingest {
            registry,
            stats,
            scopes: HashMap::new(),
            publishers: HashMap::new(),
            own_ids,
            last_prune: Instant::now(),
        }
    }

    fn engine_of(&mut self, subject: &str) -> Result<(usize, Arc<str>), Reject> {
        if let Some(s) = self.scopes.get(subject) {
            return Ok((s.engine, s.subject.clone()));
        }
        let scope = Scope::parse(subject).ok_or(Reject::Subject)?;
        let labels = SCOPE_LABELS
            .iter()
            .zip([&scope.namespace, &scope.component, &scope.endpoint])
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let name = format!("{}/{}/{}", scope.namespace, scope.component, scope.endpoint);
        // The same scope may be reached by two spellings of a subject; one engine each
        // would split its ranks, so look the name up first.
        let existing = (0..self.registry.engines.len()).find(|&i| {
            self.registry.engines[i].name == name && self.registry.engines[i].labels == labels
        });
        let engine = match existing {
            Some(i) => i,
            None => {
                let i = self
                    .registry
                    .engines
                    .push(EngineInfo {
                        name: name.clone(),
                        labels,
                    })
                    .ok_or(Reject::EngineLimit)?;
                tracing::info!(engine = %name, subject, "new NATS scope");
                i
            }
        };
        let subject_arc: Arc<str> = Arc::from(subject);
        self.scopes.insert(
            subject.to_owned(),
            Scoped {
                engine,
                subject: subject_arc.clone(),
            },
        );
        Ok((engine, subject_arc))
    }

    /// Handles one message: counts it, and ingests it or counts why not.
    pub fn handle(&mut self, subject: &str, payload: &[u8]) {
        self.stats.messages.fetch_add(1, Relaxed);
        if let Err(r) = self.try_handle(subject, payload) {
            self.stats.reject(r);
        }
    }

    fn try_handle(&mut self, subject: &str, payload: &[u8]) -> Result<(), Reject> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(Reject::Oversize);
        }
        let (engine, subject) = self.engine_of(subject)?;
        let decoded = envelope::decode(payload).map_err(|e| match e {
            EnvelopeError::Malformed => Reject::EnvelopeMalformed,
            EnvelopeError::MissingField => Reject::EnvelopeMissingField,
        })?;
        let env = decoded.envelope;
        if decoded.unknown_fields > 0 {
            self.stats
                .unknown_envelope_fields
                .fetch_add(u64::from(decoded.unknown_fields), Relaxed);
        }
        if env.topic != FPM_TOPIC {
            return Err(Reject::WrongTopic);
        }
        if self.own_ids.contains(&env.publisher_id) {
            self.stats.own_messages.fetch_add(1, Relaxed);
            return Ok(());
        }
        let now = self.registry.now();
        let key = (engine, env.publisher_id);
        if !self.publishers.contains_key(&key) {
            if self.publishers.len() >= MAX_PUBLISHERS {
                return Err(Reject::PublisherLimit);
            }
            self.publishers.insert(
                key,
                Publisher {
                    tracker: SequenceTracker::keyed(),
                    cache: RankCache::default(),
                    seen: now.instant,
                },
            );
            self.stats
                .publishers
                .store(self.publishers.len() as u64, Relaxed);
        }
        let publisher = self.publishers.get_mut(&key).expect("inserted above");
        publisher.seen = now.instant;
        // Sequence first, so a bad payload is not also counted as a lost message.
        let seq = publisher.tracker.observe(env.sequence);
        if let crate::state::sequence::SeqEvent::Gap { missed } = seq {
            self.stats.missed_messages.fetch_add(missed, Relaxed);
        }
        match decode_payload(env.payload) {
            Ok(metrics) => {
                if self.registry.ingest(
                    &mut publisher.cache,
                    engine,
                    &subject,
                    env.sequence,
                    seq,
                    metrics,
                    &now,
                ) {
                    self.stats.ingested.fetch_add(1, Relaxed);
                }
            }
            Err(e) => {
                self.stats.payload_errors[e.index()].fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    /// Forgets publishers silent for `idle` (checked at most once a second).
    pub fn prune(&mut self, idle: Duration) {
        let now = Instant::now();
        if now.duration_since(self.last_prune) < Duration::from_secs(1) {
            return;
        }
        self.last_prune = now;
        self.publishers
            .retain(|_, p| now.duration_since(p.seen) < idle);
        self.stats
            .publishers
            .store(self.publishers.len() as u64, Relaxed);
    }
}

/// Connects (in the background: NATS need not be up), subscribes and ingests until
/// `shutdown`. async-nats restores the subscription after every reconnect.
pub async fn run(
    registry: Arc<Registry>,
    stats: Arc<NatsStats>,
    settings: super::config::NatsSettings,
    own_ids: Arc<HashSet<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(url) = settings.ingest_url.clone() else {
        return;
    };
    stats.ingest.enabled.store(true, Relaxed);
    let options = match settings.auth.options("fpm-exporter-ingest").await {
        Ok(o) => o
            .event_callback(super::event_callback(stats.clone(), false))
            .subscription_capacity(65_536),
        Err(e) => {
            tracing::error!(error = %e, "nats: cannot read auth files; NATS ingest is off");
            return;
        }
    };
    let client = tokio::select! {
        c = options.connect(url.as_str()) => c,
        _ = shutdown.changed() => return,
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, url, "nats: cannot start the client; NATS ingest is off");
            return;
        }
    };
    let expire = registry.config.expire_after;
    let mut ingest = Ingest::new(registry, stats, own_ids);
    let mut sub = loop {
        match client.subscribe(settings.ingest_subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!(error = %e, "nats subscribe failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    tracing::info!(subject = %settings.ingest_subject, "subscribed to NATS FPM subjects");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            m = sub.next() => match m {
                Some(msg) => {
                    ingest.handle(msg.subject.as_str(), &msg.payload);
                    ingest.prune(expire);
                }
                None => break,
            }
        }
    }
    let _ = sub.unsubscribe().await;
}
