//! The JetStream KV load table (`--nats-kv-bucket`): one key per rank holding its
//! `/v1/rank_loads` entry, for routers on any node. The table must never show a dead rank as
//! busy: a rank's entry is rewritten when its state changes (stale the moment
//! `/v1/rank_loads` says so) and deleted when it expires, whatever the bucket's TTL. A
//! bucket lost with the server's JetStream state is recreated within a second, and an
//! existing bucket whose settings would keep old revisions, never expire or refuse the
//! entries is corrected at start, with a warning naming each setting.

use super::kv_key;
use crate::source::nats::{LogEvery, NatsStats};
use crate::state::rank::{Liveness, RankKey};
use crate::state::{Event, EventKind, RankFilter, Registry};
use async_nats::jetstream::{self, stream, ErrorCode};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// Shortest interval between two KV puts of one rank.
pub const KV_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Smallest `max_msg_size` an existing bucket may keep: an entry is about 400 bytes,
/// and a long engine or worker name must still fit.
pub const MIN_MESSAGE_SIZE: i32 = 16 * 1024;

/// Where the KV writer writes: its bucket, and the node part of its keys.
pub struct Target {
    /// The bucket.
    pub bucket: String,
    /// This node's name (see [`crate::source::nats::NODE_HEADER`]).
    pub node: String,
}

/// The stream a KV bucket is, configured as async-nats's `create_key_value` does
/// (jetstream/context.rs `kv_to_stream_config`) with history 1 and `max_age`.
fn bucket_config(bucket: &str, max_age: Duration) -> stream::Config {
    stream::Config {
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
    }
}

/// What differs in an existing bucket from what the table needs, one reason each.
pub fn config_problems(have: &stream::Config, max_age: Duration) -> Vec<String> {
    let mut out = Vec::new();
    if have.max_messages_per_subject != 1 {
        out.push(format!(
            "history {} (keeps old loads; want 1)",
            have.max_messages_per_subject
        ));
    }
    if have.max_age != max_age {
        out.push(format!(
            "max_age {:?} (want --expire-after, {max_age:?}{})",
            have.max_age,
            if have.max_age.is_zero() {
                "; 0 never expires"
            } else {
                ""
            }
        ));
    }
    if have.max_message_size >= 0 && have.max_message_size < MIN_MESSAGE_SIZE {
        out.push(format!(
            "max_msg_size {} (refuses the entries; want unlimited)",
            have.max_message_size
        ));
    }
    out
}

/// Opens the bucket, creating it when absent and correcting its settings when they
/// would mislead a router; `Err` when it can be neither used nor fixed.
async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<jetstream::kv::Store, String> {
    let name = format!("KV_{bucket}");
    match js.get_stream(&name).await {
        Ok(s) => {
            let mut config = s.cached_info().config.clone();
            let problems = config_problems(&config, max_age);
            if !problems.is_empty() {
                tracing::warn!(
                    bucket,
                    problems = %problems.join(", "),
                    "nats kv bucket exists with other settings; correcting them"
                );
                config.max_messages_per_subject = 1;
                config.max_age = max_age;
                if config.max_message_size >= 0 && config.max_message_size < MIN_MESSAGE_SIZE {
                    config.max_message_size = -1;
                }
                js.update_stream(config).await.map_err(|e| {
                    format!(
                        "bucket {bucket} has {} and cannot be corrected ({e}); not writing it",
                        problems.join(", ")
                    )
                })?;
            }
        }
        Err(e) if is_not_found(&e) => {
            js.create_stream(bucket_config(bucket, max_age))
                .await
                .map_err(|e| e.to_string())?;
        }
        Err(e) => return Err(e.to_string()),
    }
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether the bucket's stream is gone (checked after failed puts).
async fn bucket_lost(js: &jetstream::Context, bucket: &str) -> bool {
    match tokio::time::timeout(
        Duration::from_secs(1),
        js.get_stream(format!("KV_{bucket}")),
    )
    .await
    {
        Ok(Err(e)) => is_not_found(&e),
        _ => false,
    }
}

/// Writes every rank's load entry, deletes expired ranks' entries, and keeps the
/// bucket there.
pub async fn kv_writer(
    client: async_nats::Client,
    registry: Arc<Registry>,
    stats: Arc<NatsStats>,
    Target { bucket, node }: Target,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let js = jetstream::new(client);
    let max_age = registry.config.expire_after;
    let mut store = None;
    let mut was_ready = false;
    let mut next_open = tokio::time::Instant::now();
    let mut open_log = LogEvery::new(Duration::from_secs(10));
    let mut put_log = LogEvery::new(Duration::from_secs(10));
    // Ranks with news not yet written, when each was last written, and the keys of
    // expired ranks still to delete.
    let mut dirty: HashSet<RankKey> = HashSet::new();
    let mut last_put: HashMap<RankKey, Instant> = HashMap::new();
    let mut deletes: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(KV_MIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut all_dirty = false;
    let key_of = |registry: &Registry, k: &RankKey| {
        kv_key(
            &registry.engines[k.engine].name,
            &node,
            &k.worker_id,
            k.dp_rank,
        )
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            r = rx.recv() => match r {
                Ok(ev) => match ev.kind {
                    EventKind::State { to: Liveness::Expired, .. } => {
                        dirty.remove(&ev.key);
                        last_put.remove(&ev.key);
                        deletes.insert(key_of(&registry, &ev.key));
                    }
                    _ => {
                        dirty.insert(ev.key.clone());
                    }
                },
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
                            if was_ready {
                                tracing::warn!(bucket, "nats kv bucket recreated; rewriting every rank");
                            } else {
                                tracing::info!(bucket, "nats kv bucket ready");
                            }
                            was_ready = true;
                            store = Some(s);
                            all_dirty = true;
                        }
                        Ok(Err(e)) => {
                            stats.kv_errors.fetch_add(1, Relaxed);
                            if open_log.due() {
                                tracing::warn!(bucket, error = %e, "nats kv bucket not usable; retrying every second");
                            }
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
                    if (all_dirty || dirty.contains(&r.key)) && due {
                        let value = Bytes::from(entry.to_string());
                        puts.push((r.key.clone(), kv.put(key_of(&registry, &r.key), value)));
                    }
                }
                all_dirty = false;
                let keys: Vec<RankKey> = puts.iter().map(|(k, _)| k.clone()).collect();
                let gone: Vec<String> = deletes.drain().collect();
                let results = tokio::time::timeout(
                    Duration::from_secs(2),
                    futures::future::join(
                        futures::future::join_all(puts.into_iter().map(|(_, f)| f)),
                        futures::future::join_all(gone.iter().map(|k| kv.delete(k))),
                    ),
                ).await;
                let mut failed = false;
                match results {
                    Ok((put_results, delete_results)) => {
                        for (k, r) in keys.into_iter().zip(put_results) {
                            match r {
                                Ok(_) => {
                                    stats.kv_updates.fetch_add(1, Relaxed);
                                    dirty.remove(&k);
                                    last_put.insert(k, now);
                                }
                                Err(e) => {
                                    failed = true;
                                    stats.kv_errors.fetch_add(1, Relaxed);
                                    if put_log.due() {
                                        tracing::warn!(bucket, error = %e, "nats kv put failed");
                                    }
                                }
                            }
                        }
                        for (k, r) in gone.into_iter().zip(delete_results) {
                            match r {
                                Ok(()) => { stats.kv_updates.fetch_add(1, Relaxed); }
                                Err(_) => {
                                    failed = true;
                                    stats.kv_errors.fetch_add(1, Relaxed);
                                    deletes.insert(k);
                                }
                            }
                        }
                    }
                    Err(_) => {
                        failed = true;
                        stats.kv_errors.fetch_add(1, Relaxed);
                        deletes.extend(gone);
                    }
                }
                // A server restarted without its JetStream state has no bucket: every
                // put fails until it is created again.
                if failed && bucket_lost(&js, &bucket).await {
                    tracing::warn!(bucket, "nats kv bucket is gone (server lost its JetStream state?); recreating it");
                    store = None;
                    next_open = tokio::time::Instant::now();
                    continue;
                }
                if last_put.len() > loads.ranks.len() {
                    let live: HashSet<&RankKey> = loads.ranks.iter().map(|r| &r.key).collect();
                    last_put.retain(|k, _| live.contains(k));
                    dirty.retain(|k| live.contains(k));
                }
            }
        }
    }
}
