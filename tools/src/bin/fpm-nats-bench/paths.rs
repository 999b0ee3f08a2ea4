//! One measured run of a path: the load generator into an exporter over ZMQ, or into
//! an edge that relays through NATS to the central exporters.

use super::{cpu_seconds, exporter, metrics, series_count, total, Args};
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
use std::time::{Duration, Instant};

pub struct Run {
    pub path: &'static str,
    pub ranks: u64,
    pub offered: f64,
    pub delivered: f64,
    pub cpu_us_per_frame: f64,
    pub scrape: Duration,
    /// The ingesting exporter's scrape, then (NATS path) the default central's.
    pub scrapes: Vec<Scrape>,
    /// Where the NATS path lost frames: relay drops at the edge, gaps at the centre.
    pub lost: Option<(f64, f64)>,
}

/// One `/metrics` scrape's size and time.
pub struct Scrape {
    pub bytes: usize,
    pub series: usize,
    pub time: Duration,
}

impl Scrape {
    pub fn of(body: &str, time: Duration) -> Scrape {
        Scrape {
            bytes: body.len(),
            series: body
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count(),
            time,
        }
    }
}

/// One run: generator -> `ingest` exporter, directly or through `edge`.
pub async fn run(
    path: &'static str,
    ranks: u64,
    args: &Args,
    nats_url: &str,
    dir: &std::path::Path,
) -> Run {
    let endpoint = format!("ipc://{}/{path}-{ranks}", dir.display());
    let zmq = [
        format!("--endpoint={endpoint}"),
        format!("--ranks={ranks}"),
        "--engine=bench".into(),
    ];
    let mut default_central = None;
    let (ingest, edge, counter) = if path == "zmq" {
        (exporter(&zmq), None, "fpm_frames_total")
    } else {
        let central = exporter(&[
            format!("--nats={nats_url}"),
            "--nats-relayed-series=central".into(),
        ]);
        default_central = Some(exporter(&[format!("--nats={nats_url}")]));
        let mut edge_args = zmq.to_vec();
        edge_args.extend([
            format!("--nats-publish={nats_url}"),
            "--nats-kv-bucket=".into(),
        ]);
        (
            central,
            Some(exporter(&edge_args)),
            "fpm_nats_ingested_frames_total",
        )
    };
    let (tx, rx) = tokio::sync::watch::channel(Phase::Warmup);
    let gen = tokio::spawn(loadgen::run(
        LoadConfig {
            endpoint,
            ranks,
            worker_id: format!("bench-{path}"),
            rate: Some(args.rate * ranks as f64),
            duration: args.duration,
            seed: 1,
        },
        rx,
        None,
    ));
    // Warm up until the ingesting exporter sees every rank.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (m, _) = metrics(&ingest.url).await;
        if series_count(&m, "fpm_up") as u64 >= ranks || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tx.send(Phase::Quiet).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_m = metrics(&ingest.url).await.0;
    let before = total(&before_m, counter);
    let lost_before = match &edge {
        Some(e) => (
            total(
                &metrics(&e.url).await.0,
                "fpm_nats_relay_dropped_frames_total",
            ),
            total(&before_m, "fpm_nats_missed_messages_total"),
        ),
        None => (0.0, 0.0),
    };
    let cpu0 = cpu_seconds(ingest.child.id());
    tx.send(Phase::Load).unwrap();
    tokio::time::sleep(args.duration).await;
    tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds(ingest.child.id()) - cpu0;
    let (m, scrape) = metrics(&ingest.url).await;
    let mut scrapes = vec![Scrape::of(&m, scrape)];
    if let Some(c) = &default_central {
        let (body, time) = metrics(&c.url).await;
        scrapes.push(Scrape::of(&body, time));
    }
    let delivered = total(&m, counter) - before;
    let lost = match &edge {
        Some(e) => {
            let em = metrics(&e.url).await.0;
            Some((
                total(&em, "fpm_nats_relay_dropped_frames_total") - lost_before.0,
                total(&m, "fpm_nats_missed_messages_total") - lost_before.1,
            ))
        }
        None => None,
    };
    tx.send(Phase::Stop).unwrap();
    let report = gen.await.unwrap().unwrap();
    Run {
        path,
        ranks,
        offered: report.load_sent() as f64 / args.duration.as_secs_f64(),
        delivered: delivered / args.duration.as_secs_f64(),
        // CPU over the load and the hold (the generator sends nothing else then); the
        // scrape is taken after the CPU reading.
        cpu_us_per_frame: cpu / delivered.max(1.0) * 1e6,
        scrape,
        scrapes,
        lost,
    }
}
