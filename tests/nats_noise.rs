//! A NATS side that is never in the way and never lies, through a real nats-server: a
//! flood past what ingest takes is counted exactly and logged once; a wrong token is one
//! clear error, not a line per retry, and nothing counts as relayed; frames made stale
//! by a stalled server are refused at the central exporter, never taken as current.

mod common;
mod nats_support;

use common::{free_port_range, sample, wait_for, Exporter};
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
use nats_support::{
    enveloped, enveloped_payload, fpm_payload, relay_edge, wait_connected, Logged, NatsServer,
};
use std::time::Duration;

const SUBJECT: &str = "namespace.dynamo.component.backend.endpoint.generate.forward-pass-metrics";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_counted_exactly_and_logged_once() {
    let nats = NatsServer::start();
    let central = Logged::central(&nats).await;
    // Subscribed once a message gets through.
    let c = nats.client().await;
    let mut seq = 0u64;
    wait_for("subscribed", Duration::from_secs(10), || {
        let (c, m) = (c.clone(), enveloped("w", 11, seq, 0));
        seq += 1;
        let central = &central;
        async move {
            c.publish(SUBJECT, m).await.unwrap();
            c.flush().await.unwrap();
            sample(&central.metrics().await, "fpm_nats_messages_total", &[]).filter(|n| *n > 0.0)
        }
    })
    .await;
    let before = sample(&central.metrics().await, "fpm_nats_messages_total", &[]).unwrap();
    let payload = fpm_payload("w", 0);
    // Floods of 100,000 until ingest falls behind (bounded: 1,000,000).
    let mut sent = 0u64;
    loop {
        for _ in 0..100_000 {
            c.publish(SUBJECT, enveloped_payload(&payload, 11, seq))
                .await
                .unwrap();
            seq += 1;
        }
        c.flush().await.unwrap();
        sent += 100_000;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = central.metrics().await;
        if sample(&m, "fpm_nats_slow_consumer_events_total", &[]).unwrap() > 0.0
            || sent >= 1_000_000
        {
            break;
        }
    }
    // Every message the server delivered is either received or counted as dropped.
    let (received, dropped) = wait_for(
        "every message received or counted",
        Duration::from_secs(20),
        || async {
            let m = central.metrics().await;
            let r = sample(&m, "fpm_nats_messages_total", &[])? - before;
            let d = sample(&m, "fpm_nats_slow_consumer_events_total", &[])?;
            (r + d == sent as f64).then_some((r, d))
        },
    )
    .await;
    eprintln!("flood of {sent}: {received} received, {dropped} counted as dropped");
    assert!(
        dropped > 0.0,
        "the flood overran ingest ({received} received)"
    );
    let slow_lines: Vec<_> = central
        .lines()
        .into_iter()
        .filter(|l| l.to_lowercase().contains("slow consumer"))
        .collect();
    assert!(
        !slow_lines.is_empty() && slow_lines.len() <= 2,
        "{dropped} dropped messages, {} log lines: {slow_lines:#?}",
        slow_lines.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_one_clear_error_and_nothing_is_relayed() {
    let nats = NatsServer::start_with(&["--auth", "right-token"]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong-token\n").unwrap();
    let port = free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let url = nats.url();
    let token = token.to_str().unwrap();
    let edge = Logged::spawn(&[
        "--endpoint",
        &endpoint,
        "--engine",
        "sgl",
        "--node",
        "n1",
        "--nats",
        &url,
        "--nats-publish",
        &url,
        "--nats-token-file",
        token,
        "--nats-kv-bucket",
        "",
    ]);
    edge.wait_sample("fpm_nats_connected", &[("role", "publish")], 0.0)
        .await;
    let (tx, rx) = tokio::sync::watch::channel(Phase::Warmup);
    let gen = tokio::spawn(loadgen::run(
        LoadConfig {
            endpoint,
            ranks: 1,
            worker_id: "tok".into(),
            rate: Some(200.0),
            duration: Duration::from_secs(5),
            seed: 1,
        },
        rx,
        None,
    ));
    edge.wait_sample("fpm_up", &[("worker_id", "tok")], 1.0)
        .await;
    tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    tx.send(Phase::Stop).unwrap();
    let sent = gen.await.unwrap().unwrap().load_sent();
    assert!(sent >= 500, "{sent}");
    let dropped = edge
        .wait_sample(
            "fpm_nats_relay_dropped_frames_total",
            &[("reason", "disconnected")],
            sent as f64,
        )
        .await;
    let m = edge.metrics().await;
    assert_eq!(
        sample(&m, "fpm_nats_relayed_frames_total", &[]),
        Some(0.0),
        "{dropped} dropped"
    );
    // Seven seconds of retries (dozens of attempts per role): one ERROR per role, saying
    // what to check, and nothing else about it.
    let lines = edge.lines();
    let errors: Vec<_> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 2, "{lines:#?}");
    assert!(
        errors
            .iter()
            .all(|l| l.contains("authorization violation") && l.contains("--nats-token-file")),
        "{errors:#?}"
    );
    assert!(lines.len() <= 8, "{} lines: {lines:#?}", lines.len());
    for role in ["ingest", "publish"] {
        let errors = sample(&m, "fpm_nats_errors_total", &[("role", role)]);
        assert!(errors.is_some_and(|n| n >= 3.0), "{role}: {errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_made_stale_by_a_stalled_server_are_refused_at_the_centre() {
    let nats = NatsServer::start();
    let url = nats.url();
    let central = Exporter::start(&["--nats", &url, "--stale-after", "1s"]).await;
    let port = free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let edge = relay_edge(&url, &endpoint, &["--stale-after", "1s"]).await;
    wait_connected(&central, "ingest").await;
    let (tx, rx) = tokio::sync::watch::channel(Phase::Warmup);
    let gen = tokio::spawn(loadgen::run(
        LoadConfig {
            endpoint,
            ranks: 1,
            worker_id: "st".into(),
            rate: Some(200.0),
            duration: Duration::from_secs(6),
            seed: 2,
        },
        rx,
        None,
    ));
    wait_for(
        "the rank at the centre",
        Duration::from_secs(10),
        || async {
            let r = central.ranks("?worker_id=st").await;
            r["ranks"].as_array().filter(|a| !a.is_empty()).map(|_| ())
        },
    )
    .await;
    tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The server stalls for 3 s with its sockets open: what the edge writes meanwhile
    // waits in socket buffers and arrives in one burst, up to 3 s old.
    nats.signal("STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.signal("CONT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Phase::Stop).unwrap();
    gen.await.unwrap().unwrap();
    let relayed = sample(&edge.metrics().await, "fpm_nats_relayed_frames_total", &[]).unwrap();
    // Every relayed frame reaches the centre: taken, or refused as stale; none lost.
    let (ingested, stale) = wait_for(
        "every relayed frame accounted for",
        Duration::from_secs(10),
        || async {
            let m = central.metrics().await;
            let i = sample(&m, "fpm_nats_ingested_frames_total", &[])?;
            let s = sample(
                &m,
                "fpm_nats_rejected_messages_total",
                &[("reason", "stale")],
            )?;
            (i + s == relayed).then_some((i, s))
        },
    )
    .await;
    eprintln!("stalled 3 s: {relayed} relayed, {ingested} taken, {stale} stale");
    // 3 s stalled with a 1 s bound: about 2 s of frames (400) were too old.
    assert!(
        (150.0..=700.0).contains(&stale),
        "{stale} stale of {relayed} relayed ({ingested} taken)"
    );
    let m = central.metrics().await;
    assert_eq!(sample(&m, "fpm_nats_missed_messages_total", &[]), Some(0.0));
    edge.stop().await;
    central.stop().await;
}
