//! `--fleet NODESxRANKS`: a central exporter's `/metrics` over a fleet of relayed ranks,
//! at `--nats-relayed-series central` (every rank in one target, the earlier topology)
//! and at the default `edge`, both ingesting the same messages in one run.
//!
//! The bench publishes what the edges of NODES nodes relay for RANKS ranks each (one
//! engine per node, SGLang's default worker id "", dp ranks 0..RANKS, frames from the
//! load generator's simulated scheduler): Dynamo's envelope
//! around the FPM bytes, the `Fpm-Node` header, one publisher id per node with its
//! sequence from 0, as the relay (`src/sink/nats`) writes them, at `--rate` frames/s per
//! rank for `--duration`. Edges themselves are not run: one ZMQ socket per rank in one
//! generator process does not fit 10,000 ranks on a small machine, and what the central
//! renders depends only on the messages it ingests.

use super::{exporter, metrics, total, Scrape};
use fpm_exporter::publisher::sim::FrameModel;
use fpm_exporter::source::nats::envelope::{self, Envelope};
use fpm_exporter::source::nats::NODE_HEADER;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one fleet run measured.
pub struct FleetRun {
    pub nodes: u64,
    pub per_node: u64,
    /// Frames published.
    pub offered: u64,
    /// Best of three scrapes: every rank (`central`), then the default (`edge`).
    pub scrapes: [Scrape; 2],
    /// Ranks each central tracks (its engine table holds 1,024 scopes x nodes).
    pub tracked: [f64; 2],
}

/// The subject of the relayed engine (Dynamo's default namespace and endpoint).
const SUBJECT: &str = "namespace.dynamo.component.sglang.endpoint.generate.forward-pass-metrics";

/// Publishes the fleet's frames and scrapes both centrals.
pub async fn run(
    nodes: u64,
    per_node: u64,
    rate: f64,
    duration: Duration,
    nats_url: &str,
) -> FleetRun {
    let all = exporter(&[
        format!("--nats={nats_url}"),
        "--nats-relayed-series=central".into(),
    ]);
    let default = exporter(&[format!("--nats={nats_url}")]);
    for c in [&all, &default] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while total(&metrics(&c.url).await.0, "fpm_nats_connected") < 1.0 {
            assert!(Instant::now() < deadline, "central not connected to NATS");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to nats-server");
    let headers: Vec<async_nats::HeaderMap> = (0..nodes)
        .map(|n| {
            let mut h = async_nats::HeaderMap::new();
            h.insert(NODE_HEADER, format!("node-{n:04}").as_str());
            h
        })
        .collect();
    let frames_per_rank = (duration.as_secs_f64() * rate).ceil().max(1.0) as u64;
    let tick = Duration::from_secs_f64(1.0 / rate);
    let mut sequence = vec![0u64; nodes as usize];
    let (mut fpm, mut buf) = (Vec::new(), Vec::new());
    // Each rank's frames from the simulated scheduler the load generator publishes.
    let mut models: Vec<FrameModel> = (0..nodes * per_node)
        .map(|i| FrameModel::new("", i % per_node, i / per_node))
        .collect();
    let mut offered = 0u64;
    for counter in 0..frames_per_rank {
        let next = tokio::time::Instant::now() + tick;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for n in 0..nodes as usize {
            for r in 0..per_node {
                let m = models[n * per_node as usize + r as usize].next_iteration();
                m.counter_id = counter;
                fpm_exporter::wire::encode::encode_payload_into(m, &mut fpm);
                envelope::encode(
                    &Envelope {
                        publisher_id: 1_000_000 + n as u64,
                        sequence: sequence[n],
                        published_at: now_ms,
                        topic: "forward-pass-metrics",
                        payload: &fpm,
                    },
                    &mut buf,
                );
                sequence[n] += 1;
                client
                    .publish_with_headers(SUBJECT, headers[n].clone(), buf.clone().into())
                    .await
                    .expect("publish");
                offered += 1;
            }
        }
        client.flush().await.expect("flush");
        tokio::time::sleep_until(next).await;
    }
    // Both centrals have everything (or a minute passed) before the scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    for c in [&all, &default] {
        while total(&metrics(&c.url).await.0, "fpm_nats_ingested_frames_total")
            + total(&metrics(&c.url).await.0, "fpm_nats_missed_messages_total")
            < offered as f64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut tracked = [0.0; 2];
    for (t, c) in tracked.iter_mut().zip([&all, &default]) {
        *t = total(&metrics(&c.url).await.0, "fpm_exporter_ranks_tracked");
    }
    let mut best = Vec::new();
    for c in [&all, &default] {
        let mut fastest: Option<Scrape> = None;
        for _ in 0..3 {
            let (body, time) = metrics(&c.url).await;
            if fastest.as_ref().is_none_or(|f| time < f.time) {
                fastest = Some(Scrape::of(&body, time));
            }
        }
        best.push(fastest.unwrap());
    }
    let default_scrape = best.pop().unwrap();
    let all_scrape = best.pop().unwrap();
    FleetRun {
        nodes,
        per_node,
        offered,
        scrapes: [all_scrape, default_scrape],
        tracked,
    }
}
