//! NATS ingest against a real nats-server: Dynamo's subjects and envelope in, the same
//! rank state as ZMQ out; hostile messages counted by reason while another publisher
//! on the same subject goes on unaffected; filters by namespace/component/endpoint.

mod common;
mod nats_support;

use bytes::Bytes;
use common::{now_ms, promtool_check, sample, wait_for, Exporter};
use fpm_exporter::source::nats::envelope::{self, Envelope};
use fpm_exporter::source::nats::subject::Scope;
use nats_support::{wait_connected, NatsServer};
use serde_json::Value;
use std::time::Duration;

fn scope(ns: &str, c: &str, e: &str) -> Scope {
    Scope {
        namespace: ns.into(),
        component: c.into(),
        endpoint: e.into(),
    }
}

fn enveloped(publisher_id: u64, sequence: u64, payload: &[u8]) -> Bytes {
    let mut buf = Vec::new();
    envelope::encode(
        &Envelope {
            publisher_id,
            sequence,
            published_at: now_ms(),
            topic: "forward-pass-metrics",
            payload,
        },
        &mut buf,
    );
    Bytes::from(buf)
}

fn frame(worker: &str, rank: u64, counter: u64, decode_reqs: u64) -> Vec<u8> {
    let mut m = fpm_exporter::wire::ForwardPassMetrics {
        version: 1,
        worker_id: worker.into(),
        dp_rank: rank,
        counter_id: counter,
        wall_time: fpm_exporter::wire::Real(0.01),
        ..Default::default()
    };
    m.scheduled_requests.num_decode_requests = fpm_exporter::wire::Count(decode_reqs);
    fpm_exporter::wire::encode::encode_payload(&m)
}

async fn rank(ex: &Exporter, worker: &str, dp: u64) -> Option<Value> {
    let v = ex.ranks(&format!("?worker_id={worker}&dp_rank={dp}")).await;
    v["ranks"].as_array()?.first().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_become_ranks_keyed_by_subject_and_publisher() {
    let nats = NatsServer::start();
    let ex = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&ex, "ingest").await;
    let client = nats.client().await;
    let subj = scope("ns.one", "backend", "generate").subject();
    // Two publishers share the subject, each numbering its envelopes from 0: neither
    // may look like a duplicate or a restart of the other.
    for seq in 0..10u64 {
        for (pid, worker) in [(11u64, "w-a"), (22, "w-b")] {
            let p = frame(worker, 1, seq, seq + 1);
            client
                .publish(subj.clone(), enveloped(pid, seq, &p))
                .await
                .unwrap();
        }
    }
    // A gap of 5 in publisher 11's sequence.
    client
        .publish(subj.clone(), enveloped(11, 15, &frame("w-a", 1, 15, 99)))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let a = wait_for("w-a's 11 frames", Duration::from_secs(10), || async {
        rank(&ex, "w-a", 1)
            .await
            .filter(|r| r["counters"]["frames"] == 11)
    })
    .await;
    let b = wait_for("w-b's 10 frames", Duration::from_secs(10), || async {
        rank(&ex, "w-b", 1)
            .await
            .filter(|r| r["counters"]["frames"] == 10)
    })
    .await;
    assert_eq!(a["engine"], "ns.one/backend/generate");
    assert_eq!(a["labels"]["dynamo_namespace"], "ns.one");
    assert_eq!(a["labels"]["dynamo_component"], "backend");
    assert_eq!(a["labels"]["dynamo_endpoint"], "generate");
    assert_eq!(a["endpoint"], subj.as_str());
    assert_eq!(a["counters"]["missed_frames"], 5, "{a}");
    assert_eq!(a["last"]["scheduled_requests"]["num_decode_requests"], 99);
    for r in [&a, &b] {
        assert_eq!(r["counters"]["duplicate_frames"], 0, "{r}");
        assert_eq!(r["counters"]["publisher_restarts"], 0, "{r}");
    }
    assert_eq!(b["counters"]["missed_frames"], 0);
    let m = ex.metrics().await;
    assert_eq!(
        sample(&m, "fpm_nats_ingested_frames_total", &[]),
        Some(21.0)
    );
    assert_eq!(sample(&m, "fpm_nats_missed_messages_total", &[]), Some(5.0));
    assert_eq!(sample(&m, "fpm_nats_publishers", &[]), Some(2.0));
    assert_eq!(
        sample(
            &m,
            "fpm_frames_total",
            &[("worker_id", "w-b"), ("dynamo_namespace", "ns.one")]
        ),
        Some(10.0)
    );
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_counted_by_reason_and_spare_other_publishers() {
    let nats = NatsServer::start();
    let ex = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&ex, "ingest").await;
    let client = nats.client().await;
    let subj = scope("dynamo", "backend", "generate").subject();
    let good = |seq: u64| enveloped(7, seq, &frame("good", 0, seq, 3));
    let mut seq = 0u64;
    client.publish(subj.clone(), good(seq)).await.unwrap();
    seq += 1;

    let bad_fpm = enveloped(8, 0, b"\xc1 not msgpack");
    let nan_fpm = {
        // A valid v1 map whose wall_time is NaN: rejected whole by the FPM decoder.
        let mut m = fpm_exporter::wire::ForwardPassMetrics {
            version: 1,
            worker_id: "bad".into(),
            ..Default::default()
        };
        m.wall_time = fpm_exporter::wire::Real(f64::NAN);
        enveloped(8, 1, &fpm_exporter::wire::encode::encode_payload(&m))
    };
    let mut unknown = Vec::new();
    {
        // The envelope of Dynamo plus one field Dynamo does not write.
        use rmpv::Value as V;
        let payload = frame("extra", 0, 0, 4);
        let map = V::Map(vec![
            (V::from("publisher_id"), V::from(9u64)),
            (V::from("sequence"), V::from(0u64)),
            (V::from("published_at"), V::from(now_ms())),
            (V::from("topic"), V::from("forward-pass-metrics")),
            (V::from("payload"), V::Binary(payload)),
            (V::from("trace_id"), V::from("abc")),
        ]);
        rmpv::encode::write_value(&mut unknown, &map).unwrap();
    }
    let wrong_topic = {
        let mut buf = Vec::new();
        envelope::encode(
            &Envelope {
                publisher_id: 10,
                sequence: 0,
                published_at: 0,
                topic: "kv-events",
                payload: &frame("t", 0, 0, 1),
            },
            &mut buf,
        );
        buf
    };
    let hostile: Vec<(String, Bytes)> = vec![
        (subj.clone(), Bytes::from_static(b"garbage \x00\xff\xfe")),
        (subj.clone(), Bytes::from(vec![0x42u8; 1_000_000])),
        (subj.clone(), Bytes::new()),
        (subj.clone(), bad_fpm),
        (subj.clone(), nan_fpm),
        (subj.clone(), Bytes::from(wrong_topic)),
        (
            subj.clone(),
            Bytes::from_static(&[0x81, 0xa3, b'f', b'o', b'o', 0x01]),
        ),
        (
            "namespace.bad%ZZ.component.c.endpoint.e.forward-pass-metrics".into(),
            good(0),
        ),
        (subj.clone(), Bytes::from(unknown)),
    ];
    for (s, body) in hostile {
        client.publish(s, body).await.unwrap();
        client.publish(subj.clone(), good(seq)).await.unwrap();
        seq += 1;
    }
    client.flush().await.unwrap();
    let m = wait_for("every message counted", Duration::from_secs(10), || async {
        let m = ex.metrics().await;
        (sample(&m, "fpm_nats_messages_total", &[]) == Some(19.0)).then_some(m)
    })
    .await;
    let reason = |r: &str| sample(&m, "fpm_nats_rejected_messages_total", &[("reason", r)]);
    assert_eq!(
        reason("envelope_malformed"),
        Some(2.0),
        "garbage and an empty message"
    );
    assert_eq!(reason("oversize"), Some(1.0), "the 1 MB message");
    assert_eq!(reason("payload_malformed"), Some(1.0));
    assert_eq!(reason("payload_invalid_value"), Some(1.0));
    assert_eq!(reason("wrong_topic"), Some(1.0));
    assert_eq!(reason("envelope_missing_field"), Some(1.0));
    assert_eq!(reason("subject"), Some(1.0));
    assert_eq!(
        sample(&m, "fpm_nats_unknown_envelope_fields_total", &[]),
        Some(1.0)
    );
    let g = rank(&ex, "good", 0)
        .await
        .expect("the good publisher's rank");
    assert_eq!(g["counters"]["frames"], 10, "{g}");
    assert_eq!(g["counters"]["missed_frames"], 0);
    let extra = rank(&ex, "extra", 0)
        .await
        .expect("unknown envelope field: still ingested");
    assert_eq!(
        extra["last"]["scheduled_requests"]["num_decode_requests"],
        4
    );
    assert!(rank(&ex, "bad", 0).await.is_none());
    let (clean, report) = promtool_check(&m);
    assert!(clean, "promtool: {report}");
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_the_scope_and_absent_nats_does_not_block_startup() {
    let mut nats = NatsServer::start();
    nats.kill();
    // NATS is down: the exporter starts and serves anyway.
    let ex = Exporter::start(&[
        "--nats",
        &nats.url(),
        "--nats-namespace",
        "prod.a",
        "--nats-component",
        "decode",
    ])
    .await;
    let (status, _) = ex.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &ex.metrics().await,
            "fpm_nats_connected",
            &[("role", "ingest")]
        ),
        Some(0.0)
    );
    nats.restart();
    wait_connected(&ex, "ingest").await;
    let client = nats.client().await;
    for (i, s) in [
        scope("prod.a", "decode", "generate"),
        scope("prod.a", "decode", "other"),
        scope("prod.b", "decode", "generate"),
        scope("prod.a", "prefill", "generate"),
    ]
    .iter()
    .enumerate()
    {
        let w = format!("w{i}");
        client
            .publish(s.subject(), enveloped(i as u64, 0, &frame(&w, 0, 0, 1)))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    wait_for("w0 and w1 in", Duration::from_secs(10), || async {
        (rank(&ex, "w0", 0).await.is_some() && rank(&ex, "w1", 0).await.is_some()).then_some(())
    })
    .await;
    let m = ex.metrics().await;
    assert_eq!(
        sample(&m, "fpm_nats_messages_total", &[]),
        Some(2.0),
        "only the filtered scope is received"
    );
    assert!(rank(&ex, "w2", 0).await.is_none() && rank(&ex, "w3", 0).await.is_none());
    ex.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_never_stops_zmq_ingest_and_both_roles_reconnect_within_2s() {
    let mut nats = NatsServer::start();
    let ex = Exporter::start(&[
        "--demo",
        "--nats",
        &nats.url(),
        "--nats-publish",
        &nats.url(),
    ])
    .await;
    let both = |want: f64| {
        let ex = &ex;
        async move {
            let m = ex.metrics().await;
            let ok = ["ingest", "publish"]
                .iter()
                .all(|r| sample(&m, "fpm_nats_connected", &[("role", r)]) == Some(want));
            ok.then_some(())
        }
    };
    wait_for("both connected", Duration::from_secs(10), || both(1.0)).await;
    let frames = |m: &str| -> f64 {
        (0..4)
            .map(|r| {
                sample(
                    m,
                    "fpm_frames_total",
                    &[("engine", "demo"), ("dp_rank", &r.to_string())],
                )
                .unwrap_or(0.0)
            })
            .sum()
    };
    nats.kill();
    wait_for("both disconnected", Duration::from_secs(10), || both(0.0)).await;
    let during = frames(&ex.metrics().await);
    // Long enough for the reconnect backoff to reach its ceiling.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = frames(&ex.metrics().await);
    assert!(
        later > during,
        "ZMQ ingest goes on while NATS is away ({during} -> {later})"
    );
    nats.restart();
    let back = std::time::Instant::now();
    wait_for("both reconnected", Duration::from_secs(10), || both(1.0)).await;
    let took = back.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "reconnected {took:?} after nats-server came back"
    );
    // The relay still runs: its own messages come back on the subscription, skipped.
    let own = |m: &str| sample(m, "fpm_nats_own_messages_total", &[]).unwrap();
    let before = own(&ex.metrics().await);
    wait_for("relay flowing again", Duration::from_secs(10), || async {
        (own(&ex.metrics().await) > before).then_some(())
    })
    .await;
    assert_eq!(
        sample(&ex.metrics().await, "fpm_nats_ingested_frames_total", &[]),
        Some(0.0),
        "own relay never re-ingested"
    );
    ex.stop().await;
}
