//! The OpenMetrics exposition, checked by the real consumers rather than by string
//! matching: prometheus_client's strict OpenMetrics parser (the same series and
//! values as the classic text), and a real Prometheus server that negotiates
//! OpenMetrics when it scrapes, keeps the target up and ingests the samples.

mod common;

use common::prometheus::Prometheus;
use common::{ipc_dir, sample, wait_for, Exporter};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// One parsed sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// What `tests/py/check_openmetrics.py` made of an exposition.
struct Parsed {
    families: Vec<(String, String)>,
    openmetrics: Vec<Sample>,
    text: Vec<Sample>,
}

/// Runs the strict OpenMetrics parser on `om` (and the classic parser on `text`):
/// `Err(parser message)` when the OpenMetrics body is rejected.
fn parse(om: &str, text: Option<&str>) -> Result<Parsed, String> {
    common::require_test_deps();
    let dir = tempfile::tempdir().unwrap();
    let om_path = dir.path().join("metrics.om");
    std::fs::write(&om_path, om).unwrap();
    let mut cmd = std::process::Command::new(common::venv_python());
    cmd.arg(common::repo_root().join("tests/py/check_openmetrics.py"))
        .arg(&om_path);
    if let Some(text) = text {
        let p = dir.path().join("metrics.txt");
        std::fs::write(&p, text).unwrap();
        cmd.arg(p);
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = |k: &str| -> Vec<Sample> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let labels = s[1]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect();
                        let value = s[2].as_str().unwrap().parse().unwrap();
                        (s[0].as_str().unwrap().to_string(), labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Parsed {
        families: v["families"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into()))
            .collect(),
        openmetrics: samples("openmetrics"),
        text: samples("text"),
    })
}

fn busy(worker_id: &str, i: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        wall_time: Real(0.01 + i as f64 * 0.001),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(4 + i),
            sum_prefill_tokens: Count(100 * i),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// An exporter with one rank that published `frames` iterations under a worker_id
/// that needs every kind of label escaping, then went quiet (so its series hold still).
async fn exporter_with_a_quiet_rank(frames: u64) -> (Exporter, FramePublisher, tempfile::TempDir) {
    let dir = ipc_dir();
    let addr = format!("ipc://{}/om", dir.path().display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    let exp =
        Exporter::start(&["--endpoint", &addr, "--engine", "om", "--windows", "5s,60s"]).await;
    let worker = "w \"q\" \\ \n é";
    // Until subscribed; the frames that count go out once the exporter has the rank.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sample(&exp.metrics().await, "fpm_up", &[("engine", "om")]).is_none() {
        assert!(std::time::Instant::now() < deadline, "rank never seen");
        p.send(&mut ForwardPassMetrics {
            version: 1,
            worker_id: worker.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..frames {
        p.send(&mut busy(worker, i)).await.unwrap();
    }
    wait_for(
        "every iteration counted",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_iterations_total", &[("engine", "om")]) == Some(frames as f64))
                .then_some(())
        },
    )
    .await;
    (exp, p, dir)
}

async fn get(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (ct, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_output_passes_the_strict_parser_and_matches_the_classic_text() {
    let (exp, p, _dir) = exporter_with_a_quiet_rank(20).await;
    // Back to back, with no frame in between: the rank's series hold still.
    let (text_ct, text) = get(&exp.url, None).await;
    let (om_ct, om) = get(&exp.url, Some(OPENMETRICS)).await;
    assert!(
        text_ct.starts_with("text/plain; version=0.0.4"),
        "{text_ct}"
    );
    assert!(om_ct.starts_with("application/openmetrics-text"), "{om_ct}");
    let parsed = parse(&om, Some(&text)).unwrap_or_else(|e| panic!("{e}\n{om}"));

    // Every family has a real type (no "unknown" from a misplaced TYPE line).
    for (name, kind) in &parsed.families {
        assert!(
            ["counter", "gauge", "summary"].contains(&kind.as_str()),
            "{name}: {kind}"
        );
    }
    let kinds: BTreeMap<&str, &str> = parsed
        .families
        .iter()
        .map(|(n, k)| (n.as_str(), k.as_str()))
        .collect();
    assert_eq!(kinds.get("fpm_frames"), Some(&"counter"));
    assert_eq!(kinds.get("fpm_wall_time_window_seconds"), Some(&"summary"));

    // Both formats carry the same series.
    let keys = |s: &[Sample]| -> BTreeSet<(String, BTreeMap<String, String>)> {
        s.iter().map(|(n, l, _)| (n.clone(), l.clone())).collect()
    };
    let (om_keys, text_keys) = (keys(&parsed.openmetrics), keys(&parsed.text));
    assert_eq!(
        om_keys.symmetric_difference(&text_keys).collect::<Vec<_>>(),
        Vec::<&(String, BTreeMap<String, String>)>::new(),
        "series only in one format"
    );
    // The rank's counters have the same values, labels unescaped to the real worker_id.
    let rank_counters: Vec<&Sample> = parsed
        .openmetrics
        .iter()
        .filter(|(n, l, _)| n.ends_with("_total") && l.contains_key("worker_id"))
        .collect();
    assert!(rank_counters.len() >= 10, "{rank_counters:?}");
    for (name, labels, value) in rank_counters {
        assert_eq!(labels["worker_id"], "w \"q\" \\ \n é", "{name}");
        let classic = parsed
            .text
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .unwrap();
        assert_eq!(classic.2, *value, "{name}{labels:?}");
    }
    let iterations = parsed
        .openmetrics
        .iter()
        .find(|(n, _, _)| n == "fpm_iterations_total")
        .unwrap();
    assert_eq!(iterations.2, 20.0);
    p.close().await;
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_parser_rejects_what_is_not_openmetrics() {
    // Guards the check above: the parser really is strict. The exporter's classic text
    // is not OpenMetrics (no `# EOF`), nor are a few classic mistakes.
    let (exp, p, _dir) = exporter_with_a_quiet_rank(1).await;
    let (_, text) = get(&exp.url, None).await;
    assert!(
        parse(&text, None).is_err(),
        "classic text accepted as OpenMetrics"
    );
    let (_, om) = get(&exp.url, Some(OPENMETRICS)).await;
    assert!(parse(&om, None).is_ok());
    for bad in [
        om.replace("# EOF\n", ""),
        om.replacen("fpm_frames_total{", "fpm_frames{", 1),
        om.replacen("worker_id=\"w \\\"q\\\"", "worker_id=\"w \"q\\\"", 1),
        format!("{om}fpm_up 1\n"),
    ] {
        assert_ne!(bad, om);
        assert!(parse(&bad, None).is_err(), "accepted:\n{bad}");
    }
    p.close().await;
    exp.stop().await;
}

/// What a recording proxy saw of one scrape: the request's Accept header and the
/// response's Content-Type.
#[derive(Debug, Clone)]
struct Exchange {
    accept: String,
    content_type: String,
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or("")
}

async fn read_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A loopback TCP proxy in front of `upstream` that records the first exchange of
/// every connection (Prometheus keeps its scrape connection alive; the rest is piped).
async fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, log) = (upstream.clone(), log.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let Some(_) = read_head(&mut client, &mut req).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&req).await.is_err() {
                    return;
                }
                let mut resp = Vec::new();
                let Some(end) = read_head(&mut server, &mut resp).await else {
                    return;
                };
                log.lock().unwrap().push(Exchange {
                    accept: header(&String::from_utf8_lossy(&req), "accept").to_string(),
                    content_type: header(&String::from_utf8_lossy(&resp[..end]), "content-type")
                        .to_string(),
                });
                if client.write_all(&resp).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_negotiates_openmetrics_and_ingests_the_samples() {
    let (exp, p, _dir) = exporter_with_a_quiet_rank(5).await;
    let (proxy, exchanges) = recording_proxy(exp.url.trim_start_matches("http://").into()).await;
    // Debian's Prometheus (2.42) has no `scrape_protocols` setting (2.49 added it); it
    // asks for OpenMetrics 1.0.0 first by default, which the proxy records.
    let prom = Prometheus::start("om", std::slice::from_ref(&proxy), None);
    let client = reqwest::Client::new();
    let query = |q: &'static str| {
        let (client, url) = (client.clone(), prom.url.clone());
        async move {
            let r = client
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            let result = v["data"]["result"].as_array()?.clone();
            (!result.is_empty()).then_some(result)
        }
    };
    let ingested = wait_for(
        "Prometheus ingested the rank",
        Duration::from_secs(60),
        || query("fpm_iterations_total{engine=\"om\"}"),
    )
    .await;
    assert_eq!(ingested.len(), 1, "{ingested:?}");
    assert_eq!(ingested[0]["value"][1], "5");
    assert_eq!(ingested[0]["metric"]["worker_id"], "w \"q\" \\ \n é");
    // The target is up and every sample of the exposition was taken in.
    let active = prom.active_targets().await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["health"], "up", "{active:?}\n{}", prom.log_tail());
    let scraped = query("scrape_samples_scraped").await.unwrap();
    let scraped: f64 = scraped[0]["value"][1].as_str().unwrap().parse().unwrap();
    let (_, om) = get(&exp.url, Some(OPENMETRICS)).await;
    let expected = parse(&om, None).unwrap().openmetrics.len() as f64;
    assert_eq!(scraped, expected, "samples ingested per scrape");

    // And the format in use was OpenMetrics, asked for and answered.
    let seen = exchanges.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for x in &seen {
        let first = x.accept.split(',').next().unwrap_or("");
        assert!(
            first.starts_with("application/openmetrics-text") && first.contains("1.0.0"),
            "Prometheus asked for {:?}",
            x.accept
        );
        assert!(
            x.content_type.starts_with("application/openmetrics-text"),
            "answered {:?}",
            x.content_type
        );
    }
    drop(prom);
    p.close().await;
    exp.stop().await;
}
