//! Restarts and loss of a rank, counted at the central exporter whatever path its
//! frames took: a real SGLang publisher restarted behind an edge, Dynamo's own
//! `FpmDirectPublisher` restarted, frames lost on the edge's ZMQ hop (the FPM
//! `counter_id` jumps), a NATS outage at the relay (dropped at once, a gap in the relayed
//! sequence), and a forged sequence number that must not count 10^15 lost frames.

mod common;
mod nats_support;

use common::{repo_root, require_test_deps, sample, venv_python, wait_for, Driver, Exporter};
use nats_support::{enveloped, relay_edge, wait_connected, NatsServer};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

fn busy() -> Value {
    json!({"scheduled_requests": {"num_decode_requests": 2, "sum_decode_kv_tokens": 20},
           "wall_time": 0.01})
}

async fn central_rank(ex: &Exporter, q: &str) -> Option<Value> {
    ex.ranks(q).await["ranks"].as_array()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sglang_restart_behind_an_edge_and_an_outage_at_the_relay_reach_the_centre() {
    let mut nats = NatsServer::start();
    let central = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&central, "ingest").await;
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let url = nats.url();
    let edge = relay_edge(&url, &endpoint, &[]).await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "w");
    let q = "?worker_id=w&dp_rank=0";
    wait_for("rank at the centre", Duration::from_secs(10), || async {
        central_rank(&central, q).await
    })
    .await;
    d.set_idle(0, false);
    for i in 0..3u64 {
        d.publish(0, busy(), 5);
        d.restart(0);
        d.set_idle(0, false);
        // The new instance must be connected again before its frames count.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            d.publish(0, busy(), 1);
            let r = central_rank(&edge, q).await.unwrap();
            if r["counters"]["publisher_restarts"].as_u64() == Some(i + 1) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "edge saw no restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    d.publish(0, busy(), 5);
    let edge_restarts =
        central_rank(&edge, q).await.unwrap()["counters"]["publisher_restarts"].clone();
    let r = wait_for(
        "restarts at the centre",
        Duration::from_secs(10),
        || async {
            let r = central_rank(&central, q).await?;
            (r["counters"]["publisher_restarts"] == edge_restarts).then_some(r)
        },
    )
    .await;
    assert_eq!(r["counters"]["publisher_restarts"], 3, "{r}");

    // A NATS outage at the relay: frames are dropped while it lasts, counted then.
    nats.kill();
    wait_for("edge sees the outage", Duration::from_secs(5), || async {
        (sample(
            &edge.metrics().await,
            "fpm_nats_connected",
            &[("role", "publish")],
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    d.publish(0, busy(), 20);
    let dropped = wait_for(
        "drops counted during the outage",
        Duration::from_secs(5),
        || async {
            let n = sample(
                &edge.metrics().await,
                "fpm_nats_relay_dropped_frames_total",
                &[("reason", "disconnected")],
            )?;
            (n >= 20.0).then_some(n)
        },
    )
    .await;
    let before = central_rank(&central, q).await.unwrap()["counters"]["missed_frames"]
        .as_u64()
        .unwrap();
    nats.restart();
    wait_connected(&central, "ingest").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.publish(0, busy(), 3);
    let r = wait_for("the gap at the centre", Duration::from_secs(10), || async {
        let r = central_rank(&central, q).await?;
        (r["counters"]["missed_frames"].as_u64()? > before).then_some(r)
    })
    .await;
    let missed = r["counters"]["missed_frames"].as_u64().unwrap() - before;
    assert!(
        missed as f64 >= dropped,
        "centre missed {missed}, relay dropped {dropped}"
    );
    let m = central.metrics().await;
    assert!(
        sample(&m, "fpm_nats_missed_messages_total", &[]).unwrap() >= dropped,
        "a gap in the relayed sequence"
    );
    edge.stop().await;
    central.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_on_the_zmq_hop_is_counted_and_a_forged_jump_is_bounded() {
    let nats = NatsServer::start();
    let ex = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&ex, "ingest").await;
    let c = nats.client().await;
    let subj = "namespace.dynamo.component.backend.endpoint.generate.forward-pass-metrics";
    // A relay's stream: its envelope sequence has no gap, but the engine's counter
    // skips 10 (frames the edge lost on ZMQ).
    for (seq, counter) in (0..10).map(|i| (i, i)).chain([(10, 20), (11, 21)]) {
        c.publish(subj, enveloped("w", 7, seq, counter))
            .await
            .unwrap();
    }
    // A forged envelope with sequence 10^15, then the publisher goes on.
    c.publish(subj, enveloped("w", 7, 1_000_000_000_000_000, 22))
        .await
        .unwrap();
    c.publish(subj, enveloped("w", 7, 12, 23)).await.unwrap();
    c.flush().await.unwrap();
    let r = wait_for("frames in", Duration::from_secs(10), || async {
        central_rank(&ex, "?worker_id=w")
            .await
            .filter(|r| r["counters"]["frames"] == 14)
    })
    .await;
    assert_eq!(r["counters"]["missed_frames"], 10, "{r}");
    let m = ex.metrics().await;
    assert!(
        sample(&m, "fpm_nats_missed_messages_total", &[]).unwrap() < 1e6,
        "bounded"
    );
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dynamo_publisher_is_a_restart_not_a_new_publisher() {
    require_test_deps();
    let nats = NatsServer::start();
    let ex = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&ex, "ingest").await;
    let kv = tempfile::tempdir().unwrap();
    for _ in 0..4 {
        let out = Command::new(venv_python())
            .arg(repo_root().join("tests/py/dynamo_nats.py"))
            .args([
                "publish",
                "--url",
                &nats.url(),
                "--count",
                "3",
                "--dp-size",
                "2",
            ])
            .env("DYN_LOG", "error")
            .env("DYN_FILE_KV", kv.path())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    for dp in 0..2 {
        let r = wait_for("12 iterations", Duration::from_secs(10), || async {
            central_rank(&ex, &format!("?worker_id=trt-worker-1&dp_rank={dp}"))
                .await
                .filter(|r| r["counters"]["iterations"] == 12)
        })
        .await;
        assert_eq!(r["counters"]["publisher_restarts"], 3, "dp {dp}: {r}");
        assert_eq!(r["counters"]["missed_frames"], 0, "dp {dp}: {r}");
    }
    assert_eq!(
        sample(&ex.metrics().await, "fpm_nats_publishers", &[]),
        Some(1.0)
    );
    ex.stop().await;
}
