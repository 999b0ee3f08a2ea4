//! The JetStream KV load table against a real nats-server and the real SGLang
//! publisher: a dead rank reads stale as promptly as `/v1/rank_loads` says so and leaves the
//! table when it expires, whatever the bucket's TTL; a bucket lost with the server's
//! JetStream state is recreated within seconds; an existing bucket with settings that
//! would mislead a router is corrected at start.

mod common;
mod nats_support;

use async_nats::jetstream::{self, kv::Store, stream};
use common::{sample, wait_for, Driver, Exporter};
use nats_support::{busy, wait_connected, NatsServer};
use serde_json::Value;
use std::time::{Duration, Instant};

/// An edge relaying one real SGLang rank (`worker_id` "w") as node `n1`, with the
/// given state timings, and the driver behind it.
async fn edge(nats: &NatsServer, timing: &[&str]) -> (Exporter, Driver) {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut args = vec!["--endpoint", &endpoint, "--engine", "sgl", "--node", "n1"];
    let url = nats.url();
    args.extend(["--nats-publish", &url]);
    args.extend_from_slice(timing);
    let ex = Exporter::start(&args).await;
    wait_connected(&ex, "publish").await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "w");
    wait_for("rank up", Duration::from_secs(10), || async {
        (sample(&ex.metrics().await, "fpm_up", &[("engine", "sgl")]) == Some(1.0)).then_some(())
    })
    .await;
    (ex, d)
}

async fn entry(kv: &Store) -> Option<Value> {
    serde_json::from_slice(&kv.get("sgl.n1.w.0").await.ok()??).ok()
}

async fn bucket(js: &jetstream::Context) -> Store {
    wait_for("the bucket", Duration::from_secs(10), || async {
        js.get_key_value("fpm-loads").await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_rank_reads_stale_promptly_and_leaves_the_table_when_it_expires() {
    let nats = NatsServer::start();
    let (ex, mut d) = edge(&nats, &["--stale-after", "1s", "--expire-after", "4s"]).await;
    let js = jetstream::new(nats.client().await);
    let kv = bucket(&js).await;
    d.set_idle(0, false);
    d.publish(0, busy(7), 5);
    wait_for("busy entry", Duration::from_secs(10), || async {
        let v = entry(&kv).await?;
        (v["running_requests"] == 7 && v["fresh"] == true).then_some(())
    })
    .await;
    // The rank dies: no frame, no heartbeat.
    d.stop(0);
    let died = Instant::now();
    let v = wait_for("the entry says stale", Duration::from_secs(5), || async {
        entry(&kv).await.filter(|v| v["state"] == "stale")
    })
    .await;
    let took = died.elapsed();
    assert_eq!(v["fresh"], false);
    assert!(took < Duration::from_millis(2500), "stale after {took:?}");
    let loads: Value = serde_json::from_str(&ex.get("/v1/rank_loads").await.1).unwrap();
    assert_eq!(
        loads["ranks"][0]["state"], "stale",
        "as /v1/rank_loads says"
    );
    // Expired: the key is deleted, although the bucket's TTL (= expire-after) has not
    // run out for the last put.
    wait_for("the entry is gone", Duration::from_secs(8), || async {
        entry(&kv).await.is_none().then_some(())
    })
    .await;
    assert!(died.elapsed() < Duration::from_secs(7));
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_lost_with_the_servers_state_is_recreated_within_seconds() {
    let mut nats = NatsServer::start();
    let (ex, mut d) = edge(&nats, &[]).await;
    d.set_idle(0, false);
    d.publish(0, busy(3), 3);
    {
        let js = jetstream::new(nats.client().await);
        let kv = bucket(&js).await;
        wait_for("entry", Duration::from_secs(10), || async {
            entry(&kv).await.filter(|v| v["running_requests"] == 3)
        })
        .await;
    }
    nats.restart_without_state();
    let back = Instant::now();
    d.set_idle(0, true);
    let js = jetstream::new(nats.client().await);
    let kv = wait_for("bucket recreated", Duration::from_secs(8), || async {
        js.get_key_value("fpm-loads").await.ok()
    })
    .await;
    wait_for("entry rewritten", Duration::from_secs(5), || async {
        entry(&kv).await
    })
    .await;
    let took = back.elapsed();
    assert!(took < Duration::from_secs(4), "recreated after {took:?}");
    // And the errors stop.
    let errors = || async { sample(&ex.metrics().await, "fpm_nats_kv_errors_total", &[]).unwrap() };
    let e1 = errors().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(errors().await, e1, "no KV error once recreated");
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_bucket_with_other_settings_is_corrected_at_start() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    // What `nats kv add fpm-loads --history 5 --max-value-size 64` makes: no TTL.
    js.create_stream(stream::Config {
        name: "KV_fpm-loads".into(),
        subjects: vec!["$KV.fpm-loads.>".into()],
        max_messages_per_subject: 5,
        max_message_size: 64,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let (ex, mut d) = edge(&nats, &["--expire-after", "2m"]).await;
    d.set_idle(0, false);
    d.publish(0, busy(5), 3);
    let kv = bucket(&js).await;
    wait_for("entries written", Duration::from_secs(10), || async {
        entry(&kv).await.filter(|v| v["running_requests"] == 5)
    })
    .await;
    let status = kv.status().await.unwrap();
    assert_eq!(status.history(), 1);
    assert_eq!(status.max_age(), Duration::from_secs(120));
    let info = js.get_stream("KV_fpm-loads").await.unwrap();
    assert!(
        info.cached_info().config.max_message_size < 0
            || info.cached_info().config.max_message_size >= 16384
    );
    ex.stop().await;
}
