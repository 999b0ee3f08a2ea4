//! The fleet's series on Prometheus' own scale-out, proven with a real Prometheus
//! (Debian's) scraping two edge exporters (two nodes, one shared configuration, as the
//! DaemonSet of deploy/edge.yaml runs them) and a central exporter over a real
//! nats-server, with the shipped rules and dashboard:
//!
//! - engine `sglang` spans both nodes (dp ranks 0-1 on node a, 2-3 on node b, real
//!   SGLang publishers and the test's own one that loses every other frame);
//! - Dynamo's own `FpmDirectPublisher` (no edge in front) publishes ranks straight to
//!   NATS and restarts 3 times;
//! - the edges are one job (`fpm-exporter-edge`), the central another (`fpm-exporter`),
//!   at the central's default `--nats-relayed-series edge`.
//!
//! Every rank is in Prometheus exactly once (its node's edge, or the central for the
//! ranks no edge relays), the engine sums over its nodes, every rule evaluates without
//! error, the crash-loop and loss alerts fire for relayed ranks (and the crash loop
//! for Dynamo's, and the NATS-path loss alert for a gap in a publisher's sequence), and
//! every dashboard panel returns data.

mod common;
#[allow(dead_code)]
mod dashboards_support;
mod nats_support;

use common::prometheus::{Job, Prometheus};
use common::{repo_root, require_test_deps, venv_python, wait_for, Driver, Exporter};
use dashboards_support::api::Api;
use dashboards_support::promql::substitute;
use dashboards_support::scenario::sglang_frame;
use dashboards_support::{checks, dashboard, panel_exprs, query_variables, RULES};
use fpm_exporter::publisher::socket::FramePublisher;
use nats_support::{enveloped, wait_connected, Edge, NatsServer};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EDGE_JOB: &str = "fpm-exporter-edge";
const CENTRAL_JOB: &str = "fpm-exporter";
/// Dynamo's default scope, where its publisher (tests/py/dynamo_nats.py) publishes.
const DYNAMO_ENGINE: &str = "dynamo/backend/generate";

fn edge(config: &std::path::Path, cwd: &std::path::Path, node: &str) -> (Edge, String) {
    let port = common::free_port_range(1);
    let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--node", node])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("NODE_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edge exporter");
    let url = format!("http://127.0.0.1:{port}");
    (Edge { child, url }, format!("127.0.0.1:{port}"))
}

/// The test's own publisher's frame for node b's rank 3 (what a real one never does:
/// it is sent with every other sequence number missing).
fn lossy_payload(d: &mut Driver, i: u64) -> bytes::Bytes {
    let mut m = sglang_frame(i);
    m["worker_id"] = json!("");
    m["dp_rank"] = json!(3);
    m["counter_id"] = json!(i);
    d.encode(m)
}

/// (alertname, job, engine, node, dp_rank) of every pending or firing alert.
type AlertKey = (String, String, String, String, String);

async fn active_alerts(api: &Api) -> Vec<AlertKey> {
    let alerts = api.get("/api/v1/alerts", &[]).await["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    alerts
        .iter()
        .map(|a| {
            let l = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_string();
            (
                l("alertname"),
                l("job"),
                l("engine"),
                l("node"),
                l("dp_rank"),
            )
        })
        .collect()
}

fn key(alert: &str, job: &str, engine: &str, node: &str, dp: &str) -> AlertKey {
    (
        alert.into(),
        job.into(),
        engine.into(),
        node.into(),
        dp.into(),
    )
}

async fn value(api: &Api, q: &str) -> f64 {
    let r = api.query(q).await;
    assert_eq!(r.len(), 1, "{q}: {r:?}");
    r[0]["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_and_a_central_on_one_prometheus_count_every_rank_once() {
    require_test_deps();
    let t0 = Instant::now();
    let nats = NatsServer::start();
    let central = Exporter::start(&[
        "--nats",
        &nats.url(),
        "--stale-after",
        "2s",
        "--expire-after",
        "5m",
        "--windows",
        "20s,60s",
    ])
    .await;
    wait_connected(&central, "ingest").await;
    let dir = common::ipc_dir();
    let config = dir.path().join("engines.toml");
    // One file for every node (deploy/edge.yaml's shape); each edge's ipc path is
    // relative to its own node directory.
    std::fs::write(
        &config,
        format!(
            "stale_after = \"2s\"\nexpire_after = \"5m\"\nwindows = [\"20s\", \"60s\"]\n\
             [nats]\npublish_url = \"{}\"\nkv_bucket = \"\"\n\n\
             [[engine]]\nname = \"sglang\"\nendpoint = \"ipc://fpm\"\nranks = 2\n\
             nats = {{ component = \"sglang\" }}\n",
            nats.url()
        ),
    )
    .unwrap();
    let mut edges = Vec::new();
    let mut targets = Vec::new();
    for node in ["a", "b"] {
        let cwd = dir.path().join(node);
        std::fs::create_dir(&cwd).unwrap();
        let (e, t) = edge(&config, &cwd, node);
        edges.push(e);
        targets.push(t);
    }
    let central_target = central.url.trim_start_matches("http://").to_string();
    let prom = Prometheus::start_jobs(
        &[
            Job {
                name: EDGE_JOB,
                path: "/metrics",
                targets: &targets,
            },
            Job {
                name: CENTRAL_JOB,
                path: "/metrics",
                targets: std::slice::from_ref(&central_target),
            },
        ],
        Some(&repo_root().join(RULES)),
    );
    let api = Api {
        url: prom.url.clone(),
        client: reqwest::Client::new(),
    };
    // Engine sglang over both nodes: dp ranks 0-1 on node a, 2 on node b (real SGLang
    // publishers), 3 on node b (the test's own, which loses every other frame).
    let ipc = |node: &str, r: u64| format!("ipc://{}/{node}/fpm.{r}", dir.path().display());
    let mut d = Driver::spawn();
    for (key, node, socket, dp) in [("a0", "a", 0, 0), ("a1", "a", 1, 1), ("b2", "b", 0, 2)] {
        d.cmd(
            json!({"cmd": "start", "key": key, "rank": dp, "dp_rank": dp,
                     "endpoint": ipc(node, socket), "worker_id": ""}),
        );
    }
    let mut lossy = FramePublisher::bind(&ipc("b", 1))
        .await
        .expect("bind b/fpm.1");
    // Every target scraped before anything happens, so Prometheus sees each counter
    // from its start.
    wait_for("3 targets up", Duration::from_secs(30), || async {
        let r = api.query("count(up == 1)").await;
        (r.first().and_then(|s| s["value"][1].as_str()) == Some("3")).then_some(())
    })
    .await;
    // Dynamo's own publisher, restarted 3 times (4 runs, each a new publisher_id), in
    // the background while the relayed traffic runs; Prometheus scrapes its ranks after
    // the first run.
    let dynamo_url = nats.url();
    let dynamo = std::thread::spawn(move || {
        let kv = tempfile::tempdir().unwrap();
        for run in 0..4 {
            if run == 1 {
                std::thread::sleep(Duration::from_millis(2500));
            }
            let out = Command::new(venv_python())
                .arg(repo_root().join("tests/py/dynamo_nats.py"))
                .args(["publish", "--url", &dynamo_url, "--count", "5"])
                .args(["--dp-size", "2"])
                .env("DYN_LOG", "error")
                .env("DYN_FILE_KV", kv.path())
                .stderr(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success(), "dynamo publisher failed");
        }
    });
    // 12 s of traffic, a tick every 250 ms; node a's rank 1 restarts 3 times.
    let mut seq = 0u64;
    for tick in 0..48u64 {
        let tick_end = tokio::time::Instant::now() + Duration::from_millis(250);
        for k in ["a0", "a1", "b2"] {
            d.cmd(json!({"cmd": "publish", "key": k, "metrics": sglang_frame(tick), "count": 3, "backpressure": true}));
        }
        for _ in 0..2 {
            let p = lossy_payload(&mut d, seq);
            lossy.send_raw(seq, p).await.unwrap();
            seq += 2;
        }
        if tick == 12 || tick == 24 || tick == 36 {
            d.cmd(json!({"cmd": "restart", "key": "a1"}));
        }
        tokio::time::sleep_until(tick_end).await;
    }
    dynamo.join().unwrap();
    // Three messages lost on the NATS path: a publisher's envelope sequence jumps from
    // 1 to 5 (the central counts the gap; FpmNatsLoss fires from the central).
    let c = nats.client().await;
    let subject = "namespace.dynamo.component.backend.endpoint.generate.forward-pass-metrics";
    for sequence in [0u64, 1, 5] {
        c.publish(subject, enveloped("gap", 77, sequence, sequence))
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    eprintln!("traffic done after {:?}", t0.elapsed());

    // The alerts fire for relayed ranks, from their edge, and for Dynamo's ranks, from
    // the central; each once.
    let want = [
        key("FpmPublisherCrashLoop", EDGE_JOB, "sglang", "a", "1"),
        key("FpmPublisherCrashLoop", CENTRAL_JOB, DYNAMO_ENGINE, "", "0"),
        key("FpmFrameLoss", EDGE_JOB, "sglang", "b", "3"),
        key("FpmNatsLoss", CENTRAL_JOB, "", "", ""),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let active = loop {
        let got = active_alerts(&api).await;
        if want.iter().all(|w| got.contains(w)) {
            break got;
        }
        if Instant::now() > deadline {
            let restarts = api
                .query("fpm_publisher_restarts_total{job=\"fpm-exporter\"}[1m]")
                .await;
            let missed = api.query("fpm_missed_frames_total").await;
            panic!("alerts {got:?}, want {want:?}; restarts {restarts:?}; missed {missed:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut seen = BTreeSet::new();
    // (FpmNatsLoss is per exporter instance: each edge that dropped frames may raise it.)
    for a in active.iter().filter(|a| a.0 != "FpmNatsLoss") {
        assert!(seen.insert(a.clone()), "alert twice: {a:?} in {active:?}");
        if a.0 == "FpmPublisherCrashLoop" || a.0 == "FpmFrameLoss" {
            // Never the central for a relayed rank: the edge serves it.
            assert!(
                !(a.1 == CENTRAL_JOB && a.2 != DYNAMO_ENGINE),
                "{a:?} from the central for a relayed rank: {active:?}"
            );
        }
    }
    eprintln!("alerts active after {:?}", t0.elapsed());

    // Every rule evaluates (two nodes of one engine in one job need `node` in the rules'
    // one-to-one matching) and returns data.
    let rules = checks::loaded_rules(&api).await;
    for (name, q) in rules.records.iter().chain(&rules.alerts) {
        if name == "FpmExporterTargetDown" || !q.contains("fpm") {
            continue;
        }
        let r = api.query(q).await;
        if name.starts_with("engine:") || name.starts_with("fpm:") {
            assert!(!r.is_empty(), "rule {name} returned no data: {q}");
        }
    }

    // Every rank once: 4 relayed from the edges, Dynamo's 2 and "gap" from the central.
    let dup = api
        .query("count by (engine, node, worker_id, dp_rank) (fpm_up) > 1")
        .await;
    assert!(dup.is_empty(), "a rank served twice: {dup:?}");
    assert_eq!(
        value(&api, &format!("count(fpm_up{{job=\"{EDGE_JOB}\"}})")).await,
        4.0
    );
    assert_eq!(
        value(&api, &format!("count(fpm_up{{job=\"{CENTRAL_JOB}\"}})")).await,
        3.0
    );
    let central_ranks: BTreeSet<String> = api
        .query(&format!("fpm_up{{job=\"{CENTRAL_JOB}\"}}"))
        .await
        .iter()
        .map(|s| s["metric"]["engine"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(central_ranks, [DYNAMO_ENGINE.to_string()].into());
    // The engine spanning nodes: one engine of 4 ranks, its throughput the sum of its
    // nodes' (the recording rule over the edges' job), never doubled by the central.
    assert_eq!(
        value(&api, "sum(fpm_engine_ranks{engine=\"sglang\"})").await,
        4.0
    );
    let by_node = api
        .query("sum by (node) (fpm_engine_ranks{engine=\"sglang\"})")
        .await;
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    // The recording rule over the edges' job: one series for the engine, its nodes
    // summed (every rank's last frame queued 4 prefill and 1 decode requests).
    wait_for("the engine's queue", Duration::from_secs(10), || async {
        let r = api
            .query("engine:fpm_queued_requests:sum{engine=\"sglang\"}")
            .await;
        (r.len() == 1 && r[0]["value"][1] == "20").then_some(())
    })
    .await;
    // The central still has the whole fleet for its JSON (planner, router, KV).
    let doc = central.ranks("").await;
    assert_eq!(doc["ranks"].as_array().unwrap().len(), 7, "{doc}");

    // Every dashboard panel returns data with the variables at their defaults ("All").
    let dash = dashboard();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (name, q) in query_variables(&dash) {
        let values = api.label_values(&substitute(&q, &vars)).await;
        assert!(!values.is_empty(), "variable {name} has no values: {q}");
        if name == "job" {
            assert_eq!(values, vec![CENTRAL_JOB.to_string(), EDGE_JOB.to_string()]);
        }
        if name == "node" {
            assert_eq!(values, vec!["a".to_string(), "b".to_string()]);
        }
        let v = if name == "window" {
            values[0].clone()
        } else {
            ".*".to_string()
        };
        vars.insert(name, v);
    }
    let exprs = panel_exprs(&dash);
    for (title, expr) in &exprs {
        let q = substitute(expr, &vars);
        let r = api.query(&q).await;
        assert!(!r.is_empty(), "panel {title:?} has no data: {q}");
    }
    eprintln!(
        "{} panel queries answered after {:?}",
        exprs.len(),
        t0.elapsed()
    );
    drop(d);
    lossy.close().await;
    drop(edges);
    central.stop().await;
    drop(prom);
    assert!(
        t0.elapsed() < Duration::from_secs(90),
        "took {:?}",
        t0.elapsed()
    );
}
