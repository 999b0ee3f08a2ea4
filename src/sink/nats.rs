//! Publishing to NATS (`--nats-publish`): every frame accepted from ZMQ goes out on
//! Dynamo's FPM subject of its engine, in Dynamo's envelope, so Dynamo's planner
//! (`FpmEventSubscriber`) sees engines Dynamo did not launch; and a JetStream KV
//! bucket holds each rank's `/v1/rank_loads` entry, for routers on any node.
//!
//! Both read the registry's event ring, which ingestion writes without ever waiting:
//! a slow, full or absent NATS server makes these tasks fall behind, never ingestion.
//! What they skip is counted (`fpm_nats_relay_dropped_frames_total`,
//! `fpm_nats_kv_dropped_updates_total`).

use crate::source::nats::config::NatsSettings;
use crate::source::nats::envelope::{self, Envelope};
use crate::source::nats::subject::FPM_TOPIC;
use crate::source::nats::NatsStats;
use crate::state::rank::RankKey;
use crate::state::{Event, EventKind, RankFilter, Registry};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Shortest interval between two KV puts of one rank.
pub const KV_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A publisher id as Dynamo makes them: random, masked to 53 bits (exact in JSON).
pub fn new_publisher_id() -> u64 {
    rand::random::<u64>() & ((1 << 53) - 1)
}

/// The NATS KV key of a rank: `<engine>.<worker_id>.<dp_rank>`, each part keeping
/// ASCII letters, digits, `-` and `_`, other bytes as `=XX` (KV keys allow no `%`).
pub fn kv_key(engine: &str, worker_id: &str, dp_rank: u64) -> String {
    let enc = |s: &str| {
        let mut o = String::with_capacity(s.len() + 1);
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                o.push(char::from(b));
            } else {
                o.push_str(&format!("={b:02X}"));
            }
        }
        if o.is_empty() {
            o.push('=');
        }
        o
    };
    format!("{}.{}.{dp_rank}", enc(engine), enc(worker_id))
}

/// What `--nats-publish` runs.
pub struct Publisher {
    /// Publisher id of each relayed engine, by engine index (skipped by our own ingest).
    pub ids: Vec<u64>,
    relay_rx: broadcast::Receiver<Arc<Event>>,
    kv_rx: Option<broadcast::Receiver<Arc<Event>>>,
}

impl Publisher {
    /// Subscribes to the event ring now, before any frame can arrive.
    pub fn new(registry: &Registry, settings: &NatsSettings) -> Self {
        Publisher {
            ids: settings
                .publish_scopes
                .iter()
                .map(|_| new_publisher_id())
                .collect(),
            relay_rx: registry.subscribe(),
            kv_rx: settings.kv_bucket.as_ref().map(|_| registry.subscribe()),
        }
    }

    /// Connects in the background and spawns the relay and the KV writer.
    pub async fn spawn(
        self,
        registry: Arc<Registry>,
        stats: Arc<NatsStats>,
        settings: NatsSettings,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
        let Some(url) = settings.publish_url.clone() else {
            return Ok(Vec::new());
        };
        stats.publish.enabled.store(true, Relaxed);
        let options = settings
            .auth
            .options("fpm-exporter-publish")
            .await?
            .event_callback(crate::source::nats::event_callback(stats.clone(), true));
        let client = options
            .connect(url.as_str())
            .await
            .map_err(|e| std::io::Error::other(format!("nats publish client: {e}")))?;
        let subjects: Vec<async_nats::Subject> = settings
            .publish_scopes
            .iter()
            .map(|s| s.subject().into())
            .collect();
        let mut tasks = vec![tokio::spawn(relay(
            client.clone(),
            stats.clone(),
            subjects,
            self.ids,
            self.relay_rx,
            shutdown.clone(),
        ))];
        if let (Some(bucket), Some(rx)) = (settings.kv_bucket.clone(), self.kv_rx) {
            tasks.push(tokio::spawn(kv_writer(
                client, registry, stats, bucket, rx, shutdown,
            )));
        }
        Ok(tasks)
    }
}

async fn relay(
    client: async_nats::Client,
    stats: Arc<NatsStats>,
    subjects: Vec<async_nats::Subject>,
    ids: Vec<u64>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sequences = vec![0u64; ids.len()];
    let mut fpm = Vec::with_capacity(512);
    let mut buf = Vec::with_capacity(640);
    loop {
        let ev = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = shutdown.changed() => break,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.relay_dropped_lagged.fetch_add(n, Relaxed);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let EventKind::Frame {
            received_at_ns,
            metrics,
            ..
        } = &ev.kind
        else {
            continue;
        };
        // Only the configured (ZMQ) engines are relayed, never what came from NATS.
        let e = ev.key.engine;
        let (Some(subject), Some(&publisher_id)) = (subjects.get(e), ids.get(e)) else {
            continue;
        };
        crate::wire::encode::encode_payload_into(metrics, &mut fpm);
        envelope::encode(
            &Envelope {
                publisher_id,
                sequence: sequences[e],
                published_at: received_at_ns / 1_000_000,
                topic: FPM_TOPIC,
                payload: &fpm,
            },
            &mut buf,
        );
        sequences[e] += 1;
        match client
            .publish(subject.clone(), Bytes::copy_from_slice(&buf))
            .await
        {
            Ok(()) => {
                stats.relayed.fetch_add(1, Relaxed);
            }
            Err(err) => {
                stats.relay_dropped_error.fetch_add(1, Relaxed);
                tracing::debug!(error = %err, "nats publish failed");
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}

async fn open_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<async_nats::jetstream::kv::Store, String> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    // The stream a KV bucket is, configured as async-nats's `create_key_value` does
    // (jetstream/context.rs `kv_to_stream_config`), but created directly: that call
    // first reads account info in a shape nats-server 2.9 (Debian's) does not send.
    use async_nats::jetstream::stream;
    js.create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("fpm-exporter: /v1/rank_loads entry per rank".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

async fn kv_writer(
    client: async_nats::Client,
    registry: Arc<Registry>,
    stats: Arc<NatsStats>,
    bucket: String,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let js = async_nats::jetstream::new(client);
    let max_age = registry.config.expire_after;
    let mut store = None;
    let mut next_open = tokio::time::Instant::now();
    // Ranks with a frame not yet written, and when each was last written.
    let mut dirty: HashMap<RankKey, ()> = HashMap::new();
    let mut last_put: HashMap<RankKey, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(KV_MIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_dirty = false;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = rx.recv() => match r {
                Ok(ev) => {
                    if matches!(ev.kind, EventKind::Frame { .. }) {
                        dirty.insert(ev.key.clone(), ());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    stats.kv_dropped_lagged.fetch_add(n, Relaxed);
                    all_dirty = true;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if store.is_none() && tokio::time::Instant::now() >= next_open {
                    match tokio::time::timeout(Duration::from_secs(2), open_bucket(&js, &bucket, max_age)).await {
                        Ok(Ok(s)) => {
                            tracing::info!(bucket, "nats kv bucket ready");
                            store = Some(s);
                        }
                        Ok(Err(e)) => {
                            stats.kv_errors.fetch_add(1, Relaxed);
                            tracing::debug!(bucket, error = %e, "nats kv bucket not ready");
                        }
                        Err(_) => { stats.kv_errors.fetch_add(1, Relaxed); }
                    }
                    next_open = tokio::time::Instant::now() + Duration::from_secs(1);
                }
                let Some(kv) = &store else { continue };
                let loads = registry.loads(&RankFilter::default());
                let doc: serde_json::Value = match serde_json::from_slice(
                    &crate::sink::shared_json::loads_document(&registry, &loads, None),
                ) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let now = Instant::now();
                let mut puts = Vec::new();
                for (r, entry) in loads.ranks.iter().zip(doc["ranks"].as_array().into_iter().flatten()) {
                    let due = last_put.get(&r.key).is_none_or(|t| now.duration_since(*t) >= KV_MIN_INTERVAL);
                    if (all_dirty || dirty.contains_key(&r.key)) && due {
                        let key = kv_key(&registry.engines[r.key.engine].name, &r.key.worker_id, r.key.dp_rank);
                        let value = Bytes::from(entry.to_string());
                        puts.push((r.key.clone(), kv.put(key, value)));
                    }
                }
                all_dirty = false;
                let keys: Vec<RankKey> = puts.iter().map(|(k, _)| k.clone()).collect();
                let results = tokio::time::timeout(
                    Duration::from_secs(2),
                    futures::future::join_all(puts.into_iter().map(|(_, f)| f)),
                ).await;
                match results {
                    Ok(results) => {
                        for (k, r) in keys.into_iter().zip(results) {
                            match r {
                                Ok(_) => {
                                    stats.kv_updates.fetch_add(1, Relaxed);
                                    dirty.remove(&k);
                                    last_put.insert(k, now);
                                }
                                Err(e) => {
                                    stats.kv_errors.fetch_add(1, Relaxed);
                                    tracing::debug!(error = %e, "nats kv put failed");
                                }
                            }
                        }
                    }
                    Err(_) => { stats.kv_errors.fetch_add(1, Relaxed); }
                }
                if last_put.len() > loads.ranks.len() {
                    let live: std::collections::HashSet<&RankKey> =
                        loads.ranks.iter().map(|r| &r.key).collect();
                    last_put.retain(|k, _| live.contains(k));
                    dirty.retain(|k, _| live.contains(k));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_are_valid_and_distinct() {
        assert_eq!(kv_key("edge-1", "w_0", 3), "edge-1.w_0.3");
        assert_eq!(kv_key("a.b", "", 0), "a=2Eb.=.0");
        assert_ne!(kv_key("a.b", "c", 0), kv_key("a", "b.c", 0));
        assert!(new_publisher_id() < 1 << 53);
    }
}
