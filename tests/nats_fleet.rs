//! A fleet through a real nats-server: 8 edge exporter processes, each fed by a load
//! generator with 32 ranks, relay to NATS (`--nats-publish`); one central exporter
//! ingests all 256 ranks (`--nats`). Checks: per-rank counts at the centre equal the
//! generators' own; the KV bucket holds 256 keys matching the edges' /v1/rank_loads; a
//! kill and restart of nats-server mid-load never disturbs ZMQ ingest, every relayed
//! frame is either delivered or counted, nothing is lost after reconnection, and
//! everyone reconnects.

mod common;
mod nats_support;

use common::{ipc_dir, sample, wait_for, Exporter};
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
use futures::StreamExt;
use nats_support::{Edge, NatsServer};
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EDGES: usize = 8;
const RANKS: u64 = 32;

async fn get(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// Per-rank frame counts by (worker_id, dp_rank) from a /v1/ranks document.
fn frames(doc: &Value) -> HashMap<(String, u64), u64> {
    doc["ranks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                (
                    r["worker_id"].as_str().unwrap().to_owned(),
                    r["dp_rank"].as_u64().unwrap(),
                ),
                r["counters"]["frames"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A counter summed over the edges and over its other labels (every drop reason).
async fn edge_metric(edges: &[Edge], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for e in edges {
        let m = get(&format!("{}/metrics", e.url)).await.unwrap_or_default();
        total += common::sample_sum(&m, name, labels);
    }
    total
}

async fn all_connected(edges: &[Edge], central: &Exporter) -> bool {
    for e in edges {
        let m = get(&format!("{}/metrics", e.url)).await.unwrap_or_default();
        if sample(&m, "fpm_nats_connected", &[("role", "publish")]) != Some(1.0) {
            return false;
        }
    }
    sample(
        &central.metrics().await,
        "fpm_nats_connected",
        &[("role", "ingest")],
    ) == Some(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_edges_relay_256_ranks_through_a_restarting_nats_server() {
    let started = Instant::now();
    let mut nats = NatsServer::start();
    let central = Exporter::start(&["--nats", &nats.url()]).await;
    let dir = ipc_dir();
    let mut edges = Vec::new();
    for k in 0..EDGES {
        let port = common::free_port_range(1);
        let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args([
                "--endpoint",
                &format!("ipc://{}/e{k}", dir.path().display()),
            ])
            .args([
                "--ranks",
                &RANKS.to_string(),
                "--engine",
                &format!("edge-{k}"),
            ])
            .args([
                "--nats-publish",
                &nats.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "warn")
            .env("NODE_NAME", format!("node-{k}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn edge exporter");
        edges.push(Edge {
            child,
            url: format!("http://127.0.0.1:{port}"),
        });
    }
    // One generator per edge, 32 ranks each, 10 frames/s per rank during the load.
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Warmup);
    let logs: Vec<_> = (0..EDGES)
        .map(|_| loadgen::SendLog::new(RANKS, Instant::now()))
        .collect();
    let sent_now = || {
        let mut m = HashMap::new();
        for (k, log) in logs.iter().enumerate() {
            for r in 0..RANKS {
                m.insert((format!("edge-{k}-w"), r), log.count(r as usize) as u64);
            }
        }
        m
    };
    let generators: Vec<_> = (0..EDGES)
        .map(|k| {
            tokio::spawn(loadgen::run(
                LoadConfig {
                    endpoint: format!("ipc://{}/e{k}", dir.path().display()),
                    ranks: RANKS,
                    worker_id: format!("edge-{k}-w"),
                    rate: Some(RANKS as f64 * 10.0),
                    duration: Duration::from_secs(30),
                    seed: k as u64,
                },
                phase_rx.clone(),
                Some(logs[k].clone()),
            ))
        })
        .collect();
    wait_for(
        "256 ranks at the centre",
        Duration::from_secs(30),
        || async {
            (frames(&central.ranks("").await).len() == EDGES * RANKS as usize).then_some(())
        },
    )
    .await;
    phase_tx.send(Phase::Quiet).unwrap();
    let settle = || async {
        // Settled: the centre's counts stop moving once everything sent is through.
        let mut last = frames(&central.ranks("").await);
        loop {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let now = frames(&central.ranks("").await);
            if now == last {
                return now;
            }
            last = now;
        }
    };
    let start = settle().await;

    // Round 1, NATS up throughout: the centre counts exactly what each generator sent.
    phase_tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phase_tx.send(Phase::Quiet).unwrap();
    let before = settle().await;
    let sent1 = sent_now();
    let round1: u64 = sent1.values().sum();
    assert!(round1 > 2_500, "round 1 ran: {round1} frames");
    for (key, n) in &sent1 {
        assert_eq!(
            before[key] - start[key],
            *n,
            "centre frames of {key:?} (round 1)"
        );
    }

    // Round 2: nats-server killed 0.7 s in and back 0.5 s later.
    let mut edge_before = HashMap::new();
    for e in &edges {
        let doc: Value =
            serde_json::from_str(&get(&format!("{}/v1/ranks", e.url)).await.unwrap()).unwrap();
        edge_before.extend(frames(&doc));
    }
    let relayed_before = edge_metric(&edges, "fpm_nats_relayed_frames_total", &[]).await;
    let m = central.metrics().await;
    let ingested_before = sample(&m, "fpm_nats_ingested_frames_total", &[]).unwrap();
    let missed_before = sample(&m, "fpm_nats_missed_messages_total", &[]).unwrap();

    phase_tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    let back = Instant::now();
    wait_for("everyone reconnected", Duration::from_secs(10), || async {
        all_connected(&edges, &central).await.then_some(())
    })
    .await;
    let reconnect = back.elapsed();
    // What was lost was lost around the outage; from here on nothing may be.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let missed_at_reconnect = sample(
        &central.metrics().await,
        "fpm_nats_missed_messages_total",
        &[],
    )
    .unwrap();
    let dropped_at_reconnect =
        edge_metric(&edges, "fpm_nats_relay_dropped_frames_total", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    phase_tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    phase_tx.send(Phase::Stop).unwrap();
    for g in generators {
        g.await.unwrap().unwrap();
    }
    let sent: HashMap<_, _> = sent_now()
        .into_iter()
        .map(|(k, n)| (k.clone(), n - sent1[&k]))
        .collect();
    let total_sent: u64 = sent.values().sum();
    assert!(total_sent > 4_000, "round 2 ran: {total_sent} frames");

    // ZMQ ingest at the edges never noticed the outage: every generated frame counted.
    let mut edge_after = HashMap::new();
    for e in &edges {
        let doc: Value =
            serde_json::from_str(&get(&format!("{}/v1/ranks", e.url)).await.unwrap()).unwrap();
        edge_after.extend(frames(&doc));
    }
    for (key, n) in &sent {
        assert_eq!(
            edge_after[key] - edge_before[key],
            *n,
            "edge frames of {key:?}"
        );
    }
    // Every accepted frame was relayed or counted as dropped at the edge, and every
    // one reached the centre or left a counted gap there: a relay drop leaves a gap
    // in the relayed sequence, and so does a relayed frame the outage swallowed.
    let settled = wait_for("the centre caught up", Duration::from_secs(10), || async {
        let relayed =
            edge_metric(&edges, "fpm_nats_relayed_frames_total", &[]).await - relayed_before;
        let dropped = edge_metric(&edges, "fpm_nats_relay_dropped_frames_total", &[]).await;
        let m = central.metrics().await;
        let ingested = sample(&m, "fpm_nats_ingested_frames_total", &[]).unwrap() - ingested_before;
        let missed = sample(&m, "fpm_nats_missed_messages_total", &[]).unwrap() - missed_before;
        (relayed + dropped == total_sent as f64 && ingested + missed == total_sent as f64)
            .then_some((relayed, dropped, ingested, missed))
    })
    .await;
    let (relayed, dropped, ingested, missed) = settled;
    eprintln!(
        "fleet: round 1 {round1} exact; round 2 sent {total_sent}, relayed {relayed}, relay drops {dropped}, centre ingested {ingested}, \
         centre missed {missed}, reconnect {reconnect:?}"
    );
    assert_eq!(
        dropped, dropped_at_reconnect,
        "no relay drop after reconnection"
    );
    assert_eq!(
        missed,
        missed_at_reconnect - missed_before,
        "no loss after reconnection"
    );
    // Per rank: the centre's count plus what was lost equals the generator's.
    let central_after = frames(&central.ranks("").await);
    let lost: u64 = sent
        .iter()
        .map(|(key, n)| n - (central_after[key] - before[key]))
        .sum();
    assert_eq!(
        lost as f64, missed,
        "per-rank losses add up to the centre's counted gaps"
    );
    assert!(missed >= dropped, "every relay drop is a gap at the centre");
    // Measured by scraping nine exporters (the centre's 256 ranks in a debug build
    // take a while to render); tests/nats_ingest.rs times the 2 s bound precisely.
    assert!(
        reconnect < Duration::from_secs(6),
        "reconnected {reconnect:?} after nats-server came back"
    );

    // The KV bucket: one key per rank, holding the edge's /v1/rank_loads entry.
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client);
    let kv = js
        .get_key_value("fpm-loads")
        .await
        .expect("bucket fpm-loads");
    let status = kv.status().await.unwrap();
    assert_eq!(
        status.max_age(),
        Duration::from_secs(300),
        "TTL = --expire-after (default 5m)"
    );
    assert_eq!(status.history(), 1);
    let mut edge_loads = HashMap::new();
    for e in &edges {
        let doc: Value =
            serde_json::from_str(&get(&format!("{}/v1/rank_loads", e.url)).await.unwrap()).unwrap();
        for r in doc["ranks"].as_array().unwrap() {
            let key = fpm_exporter::sink::nats::kv_key(
                r["engine"].as_str().unwrap(),
                &r["engine"].as_str().unwrap().replace("edge-", "node-"),
                r["worker_id"].as_str().unwrap(),
                r["dp_rank"].as_u64().unwrap(),
            );
            edge_loads.insert(key, r.clone());
        }
    }
    assert_eq!(edge_loads.len(), 256);
    let fields = [
        "engine",
        "worker_id",
        "dp_rank",
        "last_frame_at_ns",
        "heartbeat",
        "running_requests",
        "waiting_requests",
        "kv_tokens",
        "queued_prefill_tokens",
        "last_wall_time_s",
    ];
    wait_for(
        "KV matches the edges' /v1/rank_loads",
        Duration::from_secs(10),
        || async {
            let keys: Vec<String> = kv
                .keys()
                .await
                .ok()?
                .filter_map(|k| async { k.ok() })
                .collect()
                .await;
            if keys.len() != 256 {
                return None;
            }
            for key in keys {
                let v: Value = serde_json::from_slice(&kv.get(&key).await.ok()??).ok()?;
                let want = edge_loads.get(&key)?;
                if fields.iter().any(|f| v[f] != want[f]) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    central.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        started.elapsed()
    );
}
