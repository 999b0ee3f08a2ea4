//! The subscription loop: one task for every FPM subject of the cluster. Each message
//! is handled in microseconds and nothing here waits on a rank, so one noisy publisher
//! cannot hold up another beyond its own messages.

use super::counter::{self, RankCounter};
use super::envelope::{self, EnvelopeError};
use super::subject::{engine_name, Scope, FPM_TOPIC};
use super::{NatsStats, Reject, NODE_HEADER, NODE_LABEL};
use crate::source::sequence::SequenceTracker;
use crate::state::labels::DEFAULT_MAX_LABEL_BYTES;
use crate::state::sequence::SeqEvent;
use crate::state::{EngineInfo, RankCache, Registry};
use crate::wire::decode::decode_payload;
use crate::wire::MAX_PAYLOAD_BYTES;
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

/// Most ranks whose `counter_id` is followed (beyond, the envelope sequence alone).
pub const MAX_COUNTED_RANKS: usize = 65_536;

/// Most subject spellings remembered (each maps to an engine already in the table).
pub const MAX_CACHED_SUBJECTS: usize = 4096;

struct Publisher {
    tracker: SequenceTracker,
    cache: RankCache,
    seen: Instant,
    /// Ranks whose latest frame this publisher carried.
    ranks: u32,
}

struct Scoped {
    engine: usize,
    subject: Arc<str>,
}

/// Ingest state of the subscription (owned by its one task).
pub struct Ingest {
    registry: Arc<Registry>,
    stats: Arc<NatsStats>,
    scopes: HashMap<(String, Option<String>), Scoped>,
    publishers: HashMap<(usize, u64), Publisher>,
    counters: HashMap<(usize, String, u64), RankCounter>,
    own_ids: Arc<HashSet<u64>>,
    last_prune: Instant,
    /// Oldest `published_at` age taken, in ms (`None`: no bound).
    max_age_ms: Option<u64>,
    stale_log: super::LogEvery,
}

impl Ingest {
    /// Ingest into `registry`, skipping envelopes of the publishers in `own_ids` (our
    /// own relay, when it publishes to the same server) and frames published longer
    /// than `max_age` ago.
    pub fn new(
        registry: Arc<Registry>,
        stats: Arc<NatsStats>,
        own_ids: Arc<HashSet<u64>>,
        max_age: Option<Duration>,
    ) -> Self {
        Ingest {
            max_age_ms: max_age.map(|d| d.as_millis() as u64),
            stale_log: super::LogEvery::new(Duration::from_secs(10)),
            registry,
            stats,
            scopes: HashMap::new(),
            publishers: HashMap::new(),
            counters: HashMap::new(),
            own_ids,
            last_prune: Instant::now(),
        }
    }

    fn engine_of(
        &mut self,
        subject: &str,
        node: Option<&str>,
    ) -> Result<(usize, Arc<str>), Reject> {
        let cache_key = (subject.to_owned(), node.map(str::to_owned));
        if let Some(s) = self.scopes.get(&cache_key) {
            return Ok((s.engine, s.subject.clone()));
        }
        let scope = Scope::parse(subject).ok_or(Reject::Subject)?;
        let mut labels: Vec<(String, String)> = SCOPE_LABELS
            .iter()
            .zip([&scope.namespace, &scope.component, &scope.endpoint])
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        if let Some(node) = node {
            labels.push((NODE_LABEL.to_owned(), node.to_owned()));
        }
        let name = engine_name(&scope);
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
                tracing::info!(engine = %name, node, subject, "new NATS scope");
                i
            }
        };
        if node.is_some() {
            self.stats.mark_relayed(engine);
        }
        // Spellings of one scope are unbounded (any byte may be %-escaped): the cache is
        // dropped when full rather than grown, and refilled from the engine table.
        if self.scopes.len() >= MAX_CACHED_SUBJECTS {
            self.scopes.clear();
        }
        let subject_arc: Arc<str> = Arc::from(subject);
        self.scopes.insert(
            cache_key,
            Scoped {
                engine,
                subject: subject_arc.clone(),
            },
        );
        Ok((engine, subject_arc))
    }

    /// Handles one message: counts it, and ingests it or counts why not.
    /// `node` is the message's [`super::NODE_HEADER`], when an edge relayed it.
    pub fn handle(&mut self, subject: &str, node: Option<&str>, payload: &[u8]) {
        self.stats.messages.fetch_add(1, Relaxed);
        if let Err(r) = self.try_handle(subject, node, payload) {
            self.stats.reject(r);
        }
    }

    fn try_handle(
        &mut self,
        subject: &str,
        node: Option<&str>,
        payload: &[u8],
    ) -> Result<(), Reject> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(Reject::Oversize);
        }
        let node = match node {
            Some(n) if n.is_empty() || n.len() > DEFAULT_MAX_LABEL_BYTES => {
                return Err(Reject::Node)
            }
            n => n,
        };
        let (engine, subject) = self.engine_of(subject, node)?;
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
                    ranks: 0,
                },
            );
        }
        let publisher = self.publishers.get_mut(&key).expect("inserted above");
        let silent = now.instant.saturating_duration_since(publisher.seen);
        publisher.seen = now.instant;
        // Sequence first, so a bad payload is not also counted as a lost message.
        let seq = counter::bounded(publisher.tracker.observe(env.sequence), silent);
        if let SeqEvent::Gap { missed } = seq {
            self.stats.missed_messages.fetch_add(missed, Relaxed);
        }
        let metrics = match decode_payload(env.payload) {
            Ok(m) => m,
            Err(e) => {
                self.stats.payload_errors[e.index()].fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        // The rank's own counter tells loss and restarts at every hop; a payload with
        // no counter (always 0) leaves the envelope's word.
        let rank_key = (engine, metrics.worker_id.clone(), metrics.dp_rank);
        let mut moved_from = None;
        let full = self.counters.len() >= MAX_COUNTED_RANKS;
        let order = match self.counters.get_mut(&rank_key) {
            None if full => seq,
            None => {
                publisher.ranks += 1;
                self.counters.insert(
                    rank_key,
                    RankCounter::new(metrics.counter_id, env.publisher_id, now.instant),
                );
                seq
            }
            Some(c) => {
                if c.publisher != env.publisher_id {
                    publisher.ranks += 1;
                    moved_from = Some(std::mem::replace(&mut c.publisher, env.publisher_id));
                }
                let by_counter = c.observe(metrics.counter_id, metrics.is_heartbeat(), now.instant);
                if metrics.counter_id == 0 {
                    seq
                } else {
                    by_counter
                }
            }
        };
        // A frame delivered late (a stalled server or path releasing a backlog) must
        // not pass for the rank's current state: its sequence and counter are taken
        // (it was not lost), its values are not. An envelope without a time (0) is
        // not aged.
        let age_ms = (now.unix_ns / 1_000_000).saturating_sub(env.published_at);
        if env.published_at > 0 && self.max_age_ms.is_some_and(|max| age_ms > max) {
            if self.stale_log.due() {
                tracing::warn!(
                    age_ms,
                    publisher_id = env.publisher_id,
                    "nats frames arrive later than --nats-max-frame-age (a stalled server, or the publisher's clock is off); skipped and counted as stale"
                );
            }
            self.forget_moved(engine, moved_from);
            return Err(Reject::Stale);
        }
        let sequence = env.sequence;
        let ingested = self.registry.ingest(
            &mut publisher.cache,
            engine,
            &subject,
            sequence,
            order,
            metrics,
            &now,
        );
        if ingested {
            self.stats.ingested.fetch_add(1, Relaxed);
        }
        self.forget_moved(engine, moved_from);
        Ok(())
    }

    /// A publisher none of whose ranks it carries any more (a restarted
    /// FpmDirectPublisher's old instance) is forgotten at once.
    fn forget_moved(&mut self, engine: usize, moved_from: Option<u64>) {
        if let Some(old) = moved_from {
            if let Some(p) = self.publishers.get_mut(&(engine, old)) {
                p.ranks = p.ranks.saturating_sub(1);
                if p.ranks == 0 {
                    self.publishers.remove(&(engine, old));
                }
            }
        }
        self.stats
            .publishers
            .store(self.publishers.len() as u64, Relaxed);
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
        self.counters
            .retain(|_, c| now.duration_since(c.seen) < idle);
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
            .subscription_capacity(super::queue::CLIENT_QUEUE),
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
    let max_age = settings.frame_age_bound(registry.config.stale_after);
    let mut ingest = Ingest::new(registry, stats.clone(), own_ids, max_age);
    let sub = loop {
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
    let source = super::queue::Source {
        sub,
        client: client.statistics(),
    };
    let mut queue =
        super::queue::forward(source, stats, super::queue::INGEST_QUEUE, shutdown.clone());
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            m = queue.recv() => match m {
                Some(msg) => {
                    let node = msg.headers.as_ref().and_then(|h| h.get(NODE_HEADER)).map(|v| v.as_str());
                    ingest.handle(msg.subject.as_str(), node, &msg.payload);
                    ingest.prune(expire);
                }
                None => break,
            }
        }
    }
}
