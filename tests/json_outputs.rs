//! The JSON outputs match their schemas in proto/schema/, filters work, expired ranks
//! leave every output, and readiness reflects the endpoints.

mod common;

use common::{sample, wait_for, Exporter};
use futures::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// Reads SSE events until `n` of each wanted name were seen (bounded by a deadline).
async fn read_events(url: &str, want: &[(&str, usize)]) -> Vec<(String, String)> {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !want
        .iter()
        .all(|(name, n)| events.iter().filter(|(e, _)| e == name).count() >= *n)
    {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let name = ev
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            if let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) {
                events.push((name, data.to_string()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_stream_match_their_schemas() {
    let exp = Exporter::start(&["--demo", "--demo-ranks", "2"]).await;
    wait_for("both demo ranks", Duration::from_secs(15), || async {
        let m = exp.metrics().await;
        (sample(&m, "fpm_up", &[("dp_rank", "1")]) == Some(1.0)
            && sample(&m, "fpm_up", &[("dp_rank", "0")]) == Some(1.0))
        .then_some(())
    })
    .await;
    let (status, all) = exp.get("/v1/ranks").await;
    assert_eq!(status, 200);
    let (_, one) = exp.get("/v1/ranks?engine=demo&dp_rank=1").await;
    let (_, none) = exp.get("/v1/ranks?engine=nope").await;
    common::validate_json("ranks", &[all.clone(), one.clone(), none.clone()]);
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["ranks"].as_array().unwrap().len(), 1);
    assert_eq!(one["ranks"][0]["dp_rank"], 1);
    let none: Value = serde_json::from_str(&none).unwrap();
    assert!(none["ranks"].as_array().unwrap().is_empty());
    assert!(
        none["engines"].as_array().unwrap().is_empty(),
        "engine filter applies to aggregates"
    );

    let frames = read_events(&format!("{}/v1/stream", exp.url), &[("frame", 5)]).await;
    let snaps = read_events(
        &format!("{}/v1/stream?interval=200ms&dp_rank=0", exp.url),
        &[("snapshot", 2)],
    )
    .await;
    let data = |evs: &[(String, String)], name: &str| -> Vec<String> {
        evs.iter()
            .filter(|(e, _)| e == name)
            .map(|(_, d)| d.clone())
            .collect()
    };
    common::validate_json("stream:frame", &data(&frames, "frame"));
    let snap_docs = data(&snaps, "snapshot");
    common::validate_json("stream:snapshot", &snap_docs);
    assert!(
        data(&snaps, "frame").is_empty(),
        "sampling mode sends snapshots, not frames"
    );
    for d in &snap_docs {
        assert_eq!(
            serde_json::from_str::<Value>(d).unwrap()["dp_rank"],
            0,
            "filter applies"
        );
    }

    // Strict query parsing: a typo is an error, not a silent "match everything".
    assert_eq!(exp.get("/v1/ranks?dp_rnk=1").await.0, 400);
    assert_eq!(exp.get("/v1/stream?interval=1ns").await.0, 400);
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_ranks_go_stale_then_expire_from_every_output() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/p", dir.path().display());
    let exp = Exporter::start(&[
        "-e",
        &base,
        "-r",
        "1",
        "--engine",
        "x",
        "--stale-after",
        "1s",
        "--expire-after",
        "3s",
    ])
    .await;
    let state_events = {
        let url = format!("{}/v1/stream?engine=x", exp.url);
        tokio::spawn(async move { read_events(&url, &[("state", 3)]).await })
    };
    // The stream client is subscribed once the exporter counts it: every state event
    // from then on reaches it.
    wait_for(
        "stream client subscribed",
        Duration::from_secs(10),
        || async {
            (sample(&exp.metrics().await, "fpm_exporter_stream_clients", &[]) == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let mut publisher = fpm_exporter::publisher::FramePublisher::bind(&format!("{base}.0"))
        .await
        .unwrap();
    let mut m = fpm_exporter::wire::ForwardPassMetrics {
        version: 1,
        worker_id: "w".into(),
        ..Default::default()
    };
    m.wall_time = fpm_exporter::wire::Real(0.01);
    m.scheduled_requests.num_decode_requests = fpm_exporter::wire::Count(3);
    // Publish until the exporter has the rank (the first frames meet the slow joiner).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        publisher.send(&mut m.clone()).await.unwrap();
        if sample(&exp.metrics().await, "fpm_up", &[("engine", "x")]) == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "rank never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Silence: stale within ~1 s, still exposed with up=0 ...
    wait_for("stale", Duration::from_secs(5), || async {
        (sample(&exp.metrics().await, "fpm_up", &[("engine", "x")]) == Some(0.0)).then_some(())
    })
    .await;
    // ... then expired: gone from /metrics and /v1/ranks, counted per engine.
    let m = wait_for("expired", Duration::from_secs(8), || async {
        let m = exp.metrics().await;
        sample(&m, "fpm_up", &[("engine", "x")])
            .is_none()
            .then_some(m)
    })
    .await;
    assert!(
        !m.contains("worker_id=\"w\""),
        "no series of the expired rank remain"
    );
    assert_eq!(
        sample(&m, "fpm_engine_ranks_expired_total", &[("engine", "x")]),
        Some(1.0)
    );
    assert!(exp.ranks("").await["ranks"].as_array().unwrap().is_empty());
    let events: Vec<_> = state_events
        .await
        .unwrap()
        .into_iter()
        .filter(|(e, _)| e == "state")
        .collect();
    let tos: Vec<String> = events
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["to"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tos, ["busy", "stale", "expired"]);
    common::validate_json(
        "stream:state",
        &events.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    );
    publisher.close().await;
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_http_is_up_and_endpoints_started_even_without_publishers() {
    // Nobody listens on these: startup must not block, and the service is ready.
    let port = common::free_port_range(3);
    let exp = Exporter::start(&["-e", &format!("tcp://127.0.0.1:{port}"), "-r", "3"]).await;
    let body = wait_for("ready", Duration::from_secs(5), || async {
        let (status, body) = exp.get("/readyz").await;
        (status == 200).then_some(body)
    })
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["endpoints"], 3);
    assert_eq!(exp.get("/healthz").await.0, 200);
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_endpoint_connected", &[("dp_rank", "2")]),
        Some(0.0)
    );
    exp.stop().await;
}

/// `fpm_exporter_stream_clients` counts `/v1/stream` clients and nothing else: the
/// recorder and the NATS relay read the same events but are not clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_clients_gauge_counts_stream_clients_only() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/p", dir.path().display());
    let record = dir.path().join("frames.jsonl");
    let exp = Exporter::start(&["-e", &base, "--record", record.to_str().unwrap()]).await;
    async fn clients(exp: &Exporter) -> Option<f64> {
        sample(&exp.metrics().await, "fpm_exporter_stream_clients", &[])
    }
    assert_eq!(
        clients(&exp).await,
        Some(0.0),
        "the recorder is not a client"
    );
    let first = reqwest::get(format!("{}/v1/stream", exp.url))
        .await
        .unwrap();
    let second = reqwest::get(format!("{}/v1/stream?interval=1s", exp.url))
        .await
        .unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    wait_for("two clients counted", Duration::from_secs(10), || async {
        (clients(&exp).await == Some(2.0)).then_some(())
    })
    .await;
    drop(first);
    drop(second);
    wait_for("clients gone", Duration::from_secs(10), || async {
        (clients(&exp).await == Some(0.0)).then_some(())
    })
    .await;
    exp.stop().await;
}
