//! A NATS server that is not there (or stalls) fills the relay's bounded buffers; ZMQ
//! ingest goes on at full speed regardless, and every accepted frame is either handed
//! to the NATS client or counted as dropped.

mod common;
mod nats_support;

use common::{ipc_dir, sample, wait_for, Exporter};
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
use nats_support::{wait_connected, NatsServer};
use std::time::Duration;

fn sum(m: &str, name: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Runs 2 s of load at 20,000 frames/s over 4 ranks and checks that ZMQ ingest took
/// every frame; returns the exporter's accepted total afterwards.
async fn load_and_check_zmq_ingest(ex: &Exporter, base: &str) -> f64 {
    let (tx, rx) = tokio::sync::watch::channel(Phase::Warmup);
    let gen = tokio::spawn(loadgen::run(
        LoadConfig {
            endpoint: base.to_string(),
            ranks: 4,
            worker_id: "bp".into(),
            rate: Some(20_000.0),
            duration: Duration::from_secs(2),
            seed: 3,
        },
        rx,
        None,
    ));
    wait_for("4 ranks", Duration::from_secs(10), || async {
        let m = ex.metrics().await;
        ((0..4).all(|r| sample(&m, "fpm_up", &[("dp_rank", &r.to_string())]) == Some(1.0)))
            .then_some(())
    })
    .await;
    tx.send(Phase::Quiet).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sum(&ex.metrics().await, "fpm_frames_total");
    tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Phase::Stop).unwrap();
    let report = gen.await.unwrap().unwrap();
    let m = ex.metrics().await;
    let counted = sum(&m, "fpm_frames_total") - before;
    assert_eq!(
        counted as u64,
        report.load_sent(),
        "ZMQ ingest took every frame while NATS could not take them"
    );
    assert!(
        report.load_sent() > 25_000,
        "more than the relay's buffers hold: {}",
        report.load_sent()
    );
    sum(&m, "fpm_frames_total")
}

/// Waits until every accepted frame is relayed or counted as dropped; returns both.
async fn relayed_or_dropped(ex: &Exporter, accepted: f64) -> (f64, f64) {
    wait_for(
        "relayed + dropped = accepted",
        Duration::from_secs(15),
        || async {
            let m = ex.metrics().await;
            let relayed = sample(&m, "fpm_nats_relayed_frames_total", &[]).unwrap();
            // Whatever the reason (disconnected, full, lagged, error).
            let dropped = sum(&m, "fpm_nats_relay_dropped_frames_total");
            (relayed + dropped == accepted).then_some((relayed, dropped))
        },
    )
    .await
}

async fn relaying_exporter(nats: &NatsServer, base: &str) -> Exporter {
    Exporter::start(&[
        "--endpoint",
        base,
        "--ranks",
        "4",
        "--engine",
        "bp",
        "--nats-publish",
        &nats.url(),
        "--nats-kv-bucket",
        "",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_server_never_slows_zmq_ingest_and_every_frame_is_relayed_or_counted() {
    // A port for the server that is started only after the load.
    let mut nats = NatsServer::start();
    nats.kill();
    let dir = ipc_dir();
    let base = format!("ipc://{}/bp", dir.path().display());
    let ex = relaying_exporter(&nats, &base).await;
    let accepted = load_and_check_zmq_ingest(&ex, &base).await;
    assert_eq!(
        sample(
            &ex.metrics().await,
            "fpm_nats_connected",
            &[("role", "publish")]
        ),
        Some(0.0)
    );
    // With no server, nothing is queued for a late burst: every frame was dropped and
    // counted as it came, before the server is back.
    let (relayed, dropped) = relayed_or_dropped(&ex, accepted).await;
    assert_eq!(
        relayed, 0.0,
        "nothing handed to a client with no connection"
    );
    assert_eq!(
        sample(
            &ex.metrics().await,
            "fpm_nats_relay_dropped_frames_total",
            &[("reason", "disconnected")]
        ),
        Some(dropped)
    );
    nats.restart();
    wait_connected(&ex, "publish").await;
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_never_slows_zmq_ingest_and_every_frame_is_relayed_or_counted() {
    let nats = NatsServer::start();
    let dir = ipc_dir();
    let base = format!("ipc://{}/bp", dir.path().display());
    let ex = relaying_exporter(&nats, &base).await;
    wait_connected(&ex, "publish").await;
    // A server that stops reading: the connection stays up, TCP and the client's
    // buffers fill, and the relay has to drop rather than hold ingest back.
    nats.signal("STOP");
    let accepted = load_and_check_zmq_ingest(&ex, &base).await;
    nats.signal("CONT");
    let (relayed, dropped) = relayed_or_dropped(&ex, accepted).await;
    eprintln!("frozen server: {relayed} relayed, {dropped} dropped of {accepted} accepted");
    assert!(
        relayed > 0.0,
        "the relay resumes once the server reads again"
    );
    let m = ex.metrics().await;
    assert_eq!(
        sample(&m, "fpm_nats_connected", &[("role", "publish")]),
        Some(1.0),
        "still (or again) connected after the freeze"
    );
    ex.stop().await;
}
