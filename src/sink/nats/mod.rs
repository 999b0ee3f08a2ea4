//! Publishing to NATS (`--nats-publish`): every frame accepted from ZMQ goes out on
//! Dynamo's FPM subject of its engine, in Dynamo's envelope, so Dynamo's planner
//! (`FpmEventSubscriber`) sees engines Dynamo did not launch; and a JetStream KV
//! bucket holds each rank's `/v1/rank_loads` entry, for routers on any node.
//!
//! Both read the registry's event ring, which ingestion writes without ever waiting:
//! a slow, full or absent NATS server makes these tasks fall behind, never ingestion.
//! What they skip is counted (`fpm_nats_relay_dropped_frames_total`,
//! `fpm_nats_kv_dropped_updates_total`).

pub mod kv;

use crate::source::nats::config::NatsSettings;
use crate::source::nats::envelope::{self, Envelope};
use crate::source::nats::subject::FPM_TOPIC;
use crate::source::nats::{NatsStats, NODE_HEADER};
use crate::state::{Event, EventKind, Registry};
use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// A publisher id as Dynamo makes them: random, masked to 53 bits (exact in JSON).
pub fn new_publisher_id() -> u64 {
    rand::random::<u64>() & ((1 << 53) - 1)
}

/// The NATS KV key of a rank: `<engine>.<node>.<worker_id>.<dp_rank>`, each part
/// keeping ASCII letters, digits, `-` and `_`, other bytes as `=XX` (KV keys allow no
/// `%`). The node keeps two edges with one configuration apart.
pub fn kv_key(engine: &str, node: &str, worker_id: &str, dp_rank: u64) -> String {
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
    format!("{}.{}.{}.{dp_rank}", enc(engine), enc(node), enc(worker_id))
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
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, settings.node.as_str());
        let max_age = settings.frame_age_bound(registry.config.stale_after);
        let mut tasks = vec![tokio::spawn(relay(
            client.clone(),
            stats.clone(),
            Outbound {
                subjects,
                headers,
                ids: self.ids,
                max_age_ns: max_age.map(|d| d.as_nanos() as u64),
                registry: registry.clone(),
            },
            self.relay_rx,
            shutdown.clone(),
        ))];
        if let (Some(bucket), Some(rx)) = (settings.kv_bucket.clone(), self.kv_rx) {
            tasks.push(tokio::spawn(kv::kv_writer(
                client,
                registry,
                stats,
                kv::Target {
                    bucket,
                    node: settings.node.clone(),
                },
                rx,
                shutdown,
            )));
        }
        Ok(tasks)
    }
}

/// Where and how the relay publishes.
struct Outbound {
    /// Subject of each relayed engine, by engine index.
    subjects: Vec<async_nats::Subject>,
    /// Headers of every message (the node).
    headers: async_nats::HeaderMap,
    /// Publisher id of each relayed engine.
    ids: Vec<u64>,
    /// Oldest frame sent, in ns since it was received (`None`: no bound).
    max_age_ns: Option<u64>,
    /// Its wall clock ages frames, as it stamped them.
    registry: Arc<Registry>,
}

async fn relay(
    client: async_nats::Client,
    stats: Arc<NatsStats>,
    out: Outbound,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Outbound {
        subjects,
        headers,
        ids,
        max_age_ns,
        registry,
    } = out;
    let mut sequences = vec![0u64; ids.len()];
    let mut fpm = Vec::with_capacity(512);
    let mut buf = Vec::with_capacity(640);
    let mut drop_log = crate::source::nats::LogEvery::new(Duration::from_secs(10));
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
                // Which engines' frames were skipped is not known: each sequence skips
                // one number, so every subscriber sees that loss happened.
                for s in &mut sequences {
                    *s += 1;
                }
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
        // Never queue while disconnected: frames sent after a reconnect would arrive
        // late in one burst. A dropped frame keeps its sequence number, so the loss is
        // a gap downstream (Dynamo's subscribers and the central exporter see it).
        if client.connection_state() != async_nats::connection::State::Connected {
            stats.relay_dropped_disconnected.fetch_add(1, Relaxed);
            sequences[e] += 1;
            let held = drop_log.suppressed;
            if drop_log.due() {
                tracing::warn!(
                    dropped = held + 1,
                    "nats publish connection not up; dropping relayed frames (counted, and a gap in the relayed sequence)"
                );
            }
            continue;
        }
        // A frame the relay reaches too late (it fell behind) would arrive downstream
        // describing a rank as it was; dropped and left as a gap like any other loss.
        let age_ns = registry.now().unix_ns.saturating_sub(*received_at_ns);
        if max_age_ns.is_some_and(|max| age_ns > max) {
            stats.relay_dropped_stale.fetch_add(1, Relaxed);
            sequences[e] += 1;
            continue;
        }
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
        // Handed over only if the client's queue has room now (the send is
        // cancel-safe): the relay never waits on NATS, so it never falls behind.
        let publish = client.publish_with_headers(
            subject.clone(),
            headers.clone(),
            Bytes::copy_from_slice(&buf),
        );
        // Polled past the coop budget a burst spends, or a frame would be dropped as
        // `full` with room in the queue.
        match crate::source::nats::poll_now(publish) {
            Some(Ok(())) => {
                stats.relayed.fetch_add(1, Relaxed);
            }
            Some(Err(err)) => {
                stats.relay_dropped_error.fetch_add(1, Relaxed);
                tracing::debug!(error = %err, "nats publish failed");
            }
            None => {
                stats.relay_dropped_full.fetch_add(1, Relaxed);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_are_valid_and_distinct() {
        assert_eq!(kv_key("edge-1", "n1", "w_0", 3), "edge-1.n1.w_0.3");
        assert_eq!(kv_key("a.b", "gpu-7.dc", "", 0), "a=2Eb.gpu-7=2Edc.=.0");
        assert_ne!(kv_key("a.b", "n", "c", 0), kv_key("a", "n", "b.c", 0));
        assert_ne!(kv_key("e", "n1", "", 0), kv_key("e", "n2", "", 0));
        assert!(new_publisher_id() < 1 << 53);
    }
}
