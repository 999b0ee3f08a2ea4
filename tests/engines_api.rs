//! `GET /v1/engines` and `/v1/stream?engines=true` end to end: a real prometheus_client
//! worker with SGLang's own definitions (tests/py/engine_worker.py) scraped with
//! `--scrape`, the real SGLang FPM publisher on the same engine, and a local
//! multiprocess directory written by the real prometheus_client.

mod common;
#[allow(dead_code)] // the exposition reader is for tests/engine_view.rs
mod engine_view_support;

use common::{validate_json, wait_for, Driver, Exporter};
use engine_view_support::Worker;
use serde_json::Value;
use std::time::Duration;

async fn engines(exp: &Exporter, query: &str) -> (u16, Value) {
    let (status, body) = exp.get(&format!("/v1/engines{query}")).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The view of the worker at `addr`, if the document has one.
fn view_of<'a>(doc: &'a Value, addr: &str) -> Option<&'a Value> {
    doc["workers"]
        .as_array()?
        .iter()
        .find(|w| w["worker_addr"] == addr)
        .map(|w| &w["view"])
        .filter(|v| !v.is_null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_document_follows_the_workers_rates_and_joins_fpm() {
    let mut worker = Worker::spawn();
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/e", dir.path().display());
    // Given as written and as a dp-aware gateway lists a worker's second rank: each
    // is an entry of its own under the address as configured, one scrape behind both.
    let scrape = format!("127.0.0.1:{}", worker.port);
    let rank1 = format!("grpc://127.0.0.1:{}@1", worker.port);
    let addr = scrape.clone();
    let exp = Exporter::start(&[
        "--endpoint",
        &base,
        "--ranks",
        "1",
        "--engine",
        "sg",
        "--label",
        "model=m",
        "--scrape",
        &scrape,
        "--scrape",
        &rank1,
        "--scrape-interval",
        "300ms",
    ])
    .await;
    let mut d = Driver::spawn();
    d.start(0, &format!("{base}.0"), "w0");

    // Both sides present: the typed view from the scrapes, FPM from the ranks.
    let doc = wait_for(
        "a view and an FPM rank",
        Duration::from_secs(20),
        || async {
            let (s, doc) = engines(&exp, "").await;
            assert_eq!(s, 200);
            let w = &doc["workers"][0];
            (w["view"]["interval_seconds"].is_number() && w["fpm"]["ranks"].as_array()?.len() == 1)
                .then_some(doc)
        },
    )
    .await;
    assert_eq!(doc["workers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["workers"][0]["engine"], "sg");
    assert_eq!(doc["workers"][0]["worker_addr"], addr.as_str());
    assert_eq!(doc["workers"][1]["worker_addr"], rank1.as_str());
    assert_eq!(doc["workers"][0]["view"], doc["workers"][1]["view"]);
    assert_eq!(doc["workers"][0]["view"]["kind"], "sglang");
    validate_json("engines", &[doc.to_string()]);

    // Rates: whatever intervals the requests fall in, rate x interval over the views
    // that follow adds up to exactly what the worker was told to do.
    let mut last_at = view_of(&doc, &addr).unwrap()["scraped_at_ns"]
        .as_u64()
        .unwrap();
    let added = worker.observe(7, 400);
    let want = |k: &str| added[k].as_f64().unwrap();
    let (mut ok, mut prompt, mut gen) = (0.0, 0.0, 0.0);
    let mut streamed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, doc) = engines(&exp, "").await;
        if let Some(v) = view_of(&doc, &addr) {
            let at = v["scraped_at_ns"].as_u64().unwrap();
            if at != last_at {
                last_at = at;
                let dt = v["interval_seconds"].as_f64().unwrap();
                ok += v["requests"]["success_per_second"].as_f64().unwrap() * dt;
                prompt += v["tokens"]["prompt_per_second"].as_f64().unwrap() * dt;
                gen += v["tokens"]["generation_per_second"].as_f64().unwrap() * dt;
                streamed.push(doc.to_string());
            }
        }
        let rel = |got: f64, k: &str| (got - want(k)).abs() <= 1e-9 * want(k).max(1.0);
        if rel(ok, "requests") && rel(prompt, "prompt") && rel(gen, "generation") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "views account for {ok} requests, {prompt} prompt and {gen} generated tokens; the worker added {added}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    validate_json("engines", &streamed);

    // The stream: opt-in `event: engine`, one per new read, shaped like a worker entry.
    let client = reqwest::Client::new();
    let mut resp = client
        .get(format!(
            "{}/v1/stream?engines=true&heartbeats=false",
            exp.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while events.len() < 2 {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("two engine events within 15 s")
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: engine") {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                // Each address of the worker has its event; follow one.
                let v: Value = serde_json::from_str(data).unwrap();
                if v["worker_addr"] == addr.as_str() {
                    events.push(data.to_string());
                }
            }
        }
    }
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    let second: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(first["worker_addr"], addr.as_str());
    assert!(
        second["view"]["scraped_at_ns"].as_u64() > first["view"]["scraped_at_ns"].as_u64(),
        "each engine event is a new read"
    );
    for e in &events {
        validate_json("stream:engine", &[e]);
    }
    drop(resp);

    // Filters and strict queries.
    let (s, doc) = engines(&exp, "?engine=other").await;
    assert_eq!((s, doc["workers"].as_array().unwrap().len()), (200, 0));
    assert_eq!(engines(&exp, "?bogus=1").await.0, 400);

    // A worker that goes away: its view turns null after one failed scrape, never a
    // stale number presented as current.
    drop(worker);
    wait_for(
        "the dead worker's view to be null",
        Duration::from_secs(10),
        || async {
            let (_, doc) = engines(&exp, "").await;
            doc["workers"][0]["view"].is_null().then_some(())
        },
    )
    .await;
    d.stop(0);
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_engine_metrics_the_endpoint_and_the_stream_option_say_so() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/n", dir.path().display());
    let exp = Exporter::start(&["--endpoint", &base, "--ranks", "1"]).await;
    let (s, doc) = engines(&exp, "").await;
    assert_eq!(s, 404);
    assert!(doc["error"].as_str().unwrap().contains("--scrape"));
    let (s, _) = exp.get("/v1/stream?engines=true").await;
    assert_eq!(s, 400);
    exp.stop().await;
}
