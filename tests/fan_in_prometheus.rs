//! `/engine_metrics` as a real Prometheus (Debian's 2.42) and `promtool` see it, fed
//! by workers that each trip the fan-in in their own way: the SMG gateway's real
//! answer (samples already carry `worker_addr`) behind a second exporter, SGLang's
//! real families from prometheus_client 0.26 over HTTP and as the OpenMetrics body it
//! writes (`# TYPE sglang:x` over `sglang_x` samples), a family typed a counter by
//! one worker and a gauge by another, stray escapes Prometheus accepts, and label
//! sets repeated in another order.
//!
//! Prometheus scrapes every worker directly and the exporter's `/engine_metrics`: the
//! fan-in target must stay up, and for every worker it must hold as many series as
//! Prometheus keeps from that worker itself.

mod common;

use common::prometheus::{Job, Prometheus};
use common::scrape_worker::Worker;
use common::{repo_root, Exporter};
use serde_json::Value;
use std::time::Duration;

/// Text 0.0.4 Prometheus ingests and a strict parser would refuse: escapes other than
/// `\\`, `\"`, `\n` in label values and HELP; one series twice, labels reordered; a
/// family the OpenMetrics worker types otherwise.
const LENIENT_TEXT: &str = r#"# HELP lenient_paths Paths, with a stray escape \t in the help.
# TYPE lenient_paths gauge
lenient_paths{path="C:\temp"} 1
lenient_paths{path="\q"} 2
lenient_paths{path="x\\"} 3
# TYPE reordered gauge
reordered{x="1",y="2"} 1
reordered{y="2",x="1"} 2
# TYPE clash_metric counter
clash_metric_total{w="text"} 3
"#;

/// OpenMetrics Prometheus ingests: a tab escape in HELP, a stray escape in a value,
/// `clash_metric` as a gauge.
const LENIENT_OM: &str = r#"# TYPE lenient_om gauge
# HELP lenient_om say\thi
lenient_om{path="C:\temp"} 1
# TYPE clash_metric gauge
clash_metric{w="om"} 4
# EOF
"#;

async fn query(client: &reqwest::Client, prom: &str, expr: &str) -> Vec<Value> {
    let v: Value = match client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Series Prometheus holds now for `selector` (its own `up`/`scrape_*` left out).
async fn series(client: &reqwest::Client, prom: &str, selector: &str) -> usize {
    let own = r#"__name__!~"up|scrape_(duration_seconds|samples_scraped|samples_post_metric_relabeling|series_added)""#;
    let expr = format!("count({{{selector},{own}}})");
    query(client, prom, &expr)
        .await
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_keeps_every_workers_series_through_the_fan_in() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("lenient.prom");
    let om = dir.path().join("lenient.om");
    std::fs::write(&text, LENIENT_TEXT).unwrap();
    std::fs::write(&om, LENIENT_OM).unwrap();
    let fixture = repo_root().join("tests/fixtures/smg-engine-metrics-sample.prom");
    let smg = Worker::spawn("file", &["--file", fixture.to_str().unwrap()]);
    let http = Worker::spawn("sglang-http", &[]);
    let om_only = Worker::spawn("sglang-om", &[]);
    let lenient_text = Worker::spawn("file", &["--file", text.to_str().unwrap()]);
    let lenient_om = Worker::spawn("file", &["--openmetrics", "--file", om.to_str().unwrap()]);

    // A: an exporter in front of the gateway; B: the exporter under test, which
    // scrapes A's /engine_metrics (a documented target) and every worker.
    let a_addr = format!("127.0.0.1:{}", smg.port);
    let a = Exporter::start(&[
        "--engine",
        "edge",
        "--scrape",
        &a_addr,
        "--scrape-interval",
        "300ms",
    ])
    .await;
    let a_hostport = a.url.trim_start_matches("http://").to_owned();
    let workers = [&smg, &http, &om_only, &lenient_text, &lenient_om];
    let mut urls: Vec<String> = workers
        .iter()
        .map(|w| format!("http://127.0.0.1:{}/metrics", w.port))
        .collect();
    urls.push(format!("http://{a_hostport}/engine_metrics"));
    let mut argv = vec!["--engine", "fan", "--scrape-interval", "300ms"];
    for u in &urls {
        argv.extend(["--scrape", u.as_str()]);
    }
    let b = Exporter::start(&argv).await;
    let b_hostport = b.url.trim_start_matches("http://").to_owned();

    let direct: Vec<String> = workers
        .iter()
        .map(|w| format!("127.0.0.1:{}", w.port))
        .collect();
    let chain = [a_hostport.clone()];
    let fanin = [b_hostport.clone()];
    let prom = Prometheus::start_jobs(
        &[
            Job {
                name: "direct",
                path: "/metrics",
                targets: &direct,
            },
            Job {
                name: "chain",
                path: "/engine_metrics",
                targets: &chain,
            },
            Job {
                name: "fanin",
                path: "/engine_metrics",
                targets: &fanin,
            },
        ],
        None,
    );
    let client = reqwest::Client::new();
    // Every worker's series, as Prometheus keeps them from the worker itself, and as
    // it keeps them from the fan-in (A's own series counted as one worker of B).
    let mut expected: Vec<(String, String)> = direct
        .iter()
        .zip(&urls)
        .map(|(d, u)| (format!(r#"job="direct",instance="{d}""#), u.clone()))
        .collect();
    expected.push((
        format!(r#"job="chain",instance="{a_hostport}""#),
        urls[5].clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let counts = loop {
        let up = query(&client, &prom.url, r#"up{job="fanin"}"#).await;
        let fan_up = up.first().and_then(|r| r["value"][1].as_str()) == Some("1");
        let mut counts = Vec::new();
        for (sel, url) in &expected {
            let want = series(&client, &prom.url, sel).await;
            let fan = format!(r#"job="fanin",worker_addr="{url}""#);
            counts.push((url.clone(), want, series(&client, &prom.url, &fan).await));
        }
        if fan_up && counts.iter().all(|(_, w, g)| *w > 0 && w == g) {
            break counts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fan-in up: {fan_up}; series per worker (worker, direct, through the fan-in): \
             {counts:#?}\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("series per worker (worker, direct, through the fan-in): {counts:?}");

    // The target stays up, scrape after scrape, with no error.
    for t in &prom.active_targets().await {
        assert_eq!(t["health"], "up", "{t}\n{}", prom.log_tail());
        assert_eq!(t["lastError"], "", "{t}");
    }
    // The exact series a user looks for: SGLang's own spelling, as its dashboards
    // query it, the stray escape kept, the gateway's labels behind two fan-ins.
    let has = |expr: &'static str| {
        let (client, prom) = (&client, &prom);
        async move { !query(client, &prom.url, expr).await.is_empty() }
    };
    assert!(has(r#"sglang:num_running_reqs{job="fanin",model_name="bench-model"}"#).await);
    assert!(has(r#"lenient_paths{job="fanin",path="C:\\temp"}"#).await);
    assert!(has(r#"lenient_om{job="fanin",path="C:\\temp"}"#).await);
    assert!(has(r#"clash_metric_total{job="fanin",w="text"}"#).await);
    assert!(has(r#"clash_metric{job="fanin",w="om"}"#).await);
    assert!(
        has(r#"sglang_num_used_tokens{job="fanin",exported_engine="edge",exported_exported_worker_addr=~"http://.*/metrics",exported_worker_addr="grpc://127.0.0.1:8001"}"#)
            .await
    );

    // promtool parses the text form whole (lint notes about the workers' own
    // families, as the SMG fixture has, are not parse errors).
    let (_, body) = b.get("/engine_metrics").await;
    let (code, report) = common::promtool_status(&body);
    assert_ne!(code, 1, "promtool cannot parse /engine_metrics:\n{report}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("reordered{")).count(),
        1,
        "a series repeated with its labels reordered is one series"
    );
    let m = b.metrics().await;
    let dup = common::sample(
        &m,
        "fpm_engine_scrape_errors_total",
        &[("worker_addr", &urls[3]), ("reason", "duplicate_sample")],
    );
    assert!(
        dup.unwrap_or(0.0) >= 1.0,
        "the reordered duplicate is counted"
    );
    b.stop().await;
    a.stop().await;
}
