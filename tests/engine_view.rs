//! The typed engine view against the real things: a worker serving SGLang 0.5.23's
//! own metric definitions with the real `prometheus_client` over HTTP, and a real
//! Prometheus (Debian's, from scripts/test-deps.sh) scraping it. Latency quantiles
//! must equal Prometheus' own `histogram_quantile` over the same two readings; rates
//! and gauges must equal what the worker reports it added.

mod common;
mod engine_view_support;

use common::prometheus::Prometheus;
use common::{repo_root, require_test_deps, venv_python};
use engine_view_support::{parse, read, Worker};
use fpm_exporter::state::engine_view::document::{EnginesDocument, WorkerEntry};
use fpm_exporter::state::engine_view::fpm::fpm_summary;
use fpm_exporter::state::engine_view::names::{How, FIELDS};
use fpm_exporter::state::engine_view::{engine_view, EngineView, Latency};
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, Registry, StateConfig};
use fpm_exporter::wire::exposition::{FamilyType, MetricFamily, Scrape};
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One instant query at exactly `time`: the single result's value (None if empty).
async fn query_at(client: &reqwest::Client, prom: &str, expr: &str, time: f64) -> Option<f64> {
    let v: Value = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr.to_string()), ("time", format!("{time:.3}"))])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    assert_eq!(v["status"], "success", "{expr}: {v}");
    let r = v["data"]["result"].as_array()?;
    assert!(r.len() <= 1, "{expr}: {v}");
    r.first()?["value"][1].as_str()?.parse().ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until Prometheus has scraped the worker after its batch: a time `T` at which
/// the e2e count is `count` and the running gauge (set last) is `running`.
async fn scraped(client: &reqwest::Client, prom: &Prometheus, count: f64, running: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = (unix_now() * 1000.0).floor() / 1000.0;
        let c = "sum(sglang_e2e_request_latency_seconds_count)";
        let r = "sum(sglang_num_running_reqs)";
        if query_at(client, &prom.url, c, t).await == Some(count)
            && query_at(client, &prom.url, r, t).await == Some(running)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the worker's batch in 60 s; its log:\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-9)
}

#[tokio::test]
async fn quantiles_equal_prometheus_histogram_quantile_and_rates_equal_the_increments() {
    let mut w = Worker::spawn();
    let prom = Prometheus::start("engine", &[format!("127.0.0.1:{}", w.port)], None);
    let client = reqwest::Client::new();

    let a = w.observe(1, 200);
    let t1 = scraped(&client, &prom, 200.0, 1.0).await;
    let first = read(&client, w.port).await;
    let b = w.observe(2, 300);
    let t2 = scraped(&client, &prom, 500.0, 2.0).await;
    let second = read(&client, w.port).await;
    assert!(a["requests"].as_f64().unwrap() > 0.0);

    let v = engine_view(Some(&first), &second);
    assert_eq!(v.kind, Some("sglang"));
    let lat: [(&str, Option<Latency>); 3] = [
        (
            "sglang:time_to_first_token_seconds",
            v.requests.time_to_first_token_seconds,
        ),
        (
            "sglang:inter_token_latency_seconds",
            v.requests.inter_token_latency_seconds,
        ),
        (
            "sglang:e2e_request_latency_seconds",
            v.requests.e2e_latency_seconds,
        ),
    ];
    for (h, l) in lat {
        let l = l.unwrap_or_else(|| panic!("{h} missing"));
        assert_eq!(l.observations, 300.0, "{h}");
        for (q, ours) in [(0.5, l.p50), (0.9, l.p90), (0.99, l.p99)] {
            // Prometheus negotiates OpenMetrics, in which prometheus_client 0.26 writes
            // `sglang:x` samples as `sglang_x`: the spelling gRPC-mode gateways show.
            let h = h.replace(':', "_");
            let expr =
                format!("histogram_quantile({q}, sum by (le) ({h}_bucket - {h}_bucket @ {t1:.3}))");
            let theirs = query_at(&client, &prom.url, &expr, t2)
                .await
                .unwrap_or_else(|| panic!("{expr}: no result"));
            let ours = ours.unwrap_or_else(|| panic!("{h} p{q} null"));
            assert!(
                close(ours, theirs),
                "{h} q={q}: ours {ours}, Prometheus {theirs}"
            );
        }
    }

    let dt = v.interval_seconds.unwrap();
    let per_s = |k: &str| b[k].as_f64().unwrap() / dt;
    let r = &v.requests;
    assert!(close(r.success_per_second.unwrap(), per_s("requests")));
    assert!(close(r.failure_per_second.unwrap(), per_s("aborted")));
    assert!(close(v.tokens.prompt_per_second.unwrap(), per_s("prompt")));
    assert!(close(
        v.tokens.generation_per_second.unwrap(),
        per_s("generation")
    ));
    let g = &b["gauges"];
    let gauge = |k: &str| g[k].as_f64().unwrap();
    assert_eq!(r.running, Some(gauge("sglang:num_running_reqs")));
    assert_eq!(r.waiting, Some(gauge("sglang:num_queue_reqs")));
    assert_eq!(v.cache.token_usage, Some(gauge("sglang:token_usage")));
    assert_eq!(v.cache.hit_rate, Some(gauge("sglang:cache_hit_rate")));
    assert_eq!(
        v.cache.kv_capacity_tokens,
        Some(gauge("sglang:max_total_num_tokens"))
    );
    assert_eq!(
        v.system.generation_throughput,
        Some(gauge("sglang:gen_throughput"))
    );
    assert_eq!(v.system.utilization, Some(gauge("sglang:utilization")));
    assert_eq!(v.counter_resets, 0);
    validate_against_schema(v, engine_view(None, &second));
}

/// Every SGLang metric the table names is one SGLang 0.5.23 defines, of the kind the
/// table reads it as.
#[test]
fn the_sglang_names_are_the_ones_sglang_defines() {
    require_test_deps();
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/py/multiproc.py"))
        .arg("sglang-defs")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let defs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kind_of = |name: &str| {
        defs["defs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .map(|d| d["kind"].as_str().unwrap().to_string())
    };
    let mut checked = 0;
    for f in FIELDS {
        let Some(src) = f.sglang else { continue };
        let want = match src.how {
            How::GaugeSum | How::GaugeMean => "gauge",
            How::Rate | How::CounterRatio => "counter",
            How::Quantiles => "histogram",
            How::BlocksTimesBlockSize => "gauge",
        };
        for m in src.metrics {
            assert_eq!(kind_of(m).as_deref(), Some(want), "{} <- {m}", f.path);
            checked += 1;
        }
    }
    assert!(checked >= 13, "{checked}");
}

/// A registry with one engine whose rank got a few real frames through ingest.
fn registry_with_ranks() -> std::sync::Arc<Registry> {
    let reg = Registry::new(
        StateConfig::default(),
        vec![EngineInfo {
            name: "sglang".into(),
            labels: vec![],
        }],
    );
    let ep: std::sync::Arc<str> = "ipc:///x".into();
    let mut cache = RankCache::default();
    let now = reg.now();
    for i in 0..5u64 {
        let mut m = ForwardPassMetrics {
            version: 1,
            worker_id: "w".into(),
            wall_time: Real(0.02),
            ..Default::default()
        };
        m.queued_requests.sum_prefill_tokens = Count(i);
        let seq = if i == 0 {
            SeqEvent::First
        } else {
            SeqEvent::InOrder
        };
        assert!(reg.ingest(&mut cache, 0, &ep, i, seq, m, &now));
    }
    reg
}

/// The document the integrator serves, built from these views, validates against
/// proto/schema/engines.schema.json: a full view with its FPM summary, a first-scrape
/// view (nulls) and a worker never scraped.
fn validate_against_schema(full: EngineView, first: EngineView) {
    let reg = registry_with_ranks();
    let fpm = fpm_summary(&reg, "sglang", None).unwrap();
    assert_eq!(fpm.ranks.len(), 1);
    let worker = |addr: &str, view, fpm| WorkerEntry {
        engine: "sglang".into(),
        worker_addr: addr.into(),
        view,
        fpm,
    };
    let doc = EnginesDocument {
        generated_at_ns: 1,
        workers: vec![
            worker("http://127.0.0.1:1", Some(full), Some(fpm)),
            worker("grpc://[::1]:2@0", Some(first), None),
            worker("http://127.0.0.1:3", None, None),
        ],
    };
    let empty = EnginesDocument {
        generated_at_ns: 2,
        workers: vec![],
    };
    common::validate_json(
        "engines",
        &[
            serde_json::to_string(&doc).unwrap(),
            serde_json::to_string(&empty).unwrap(),
        ],
    );
}

#[test]
fn the_schema_rejects_what_it_must() {
    // The schema is strict: a renamed field or a string where a number goes fails.
    let bad = r#"{"generated_at_ns": 1, "workers": [{"engine": "e", "worker_addr": "a", "fpm": null,
        "view": {"kind": "sglang", "scraped_at_ns": 1, "interval_seconds": null, "counter_resets": 0,
        "requests": {"running": "3", "waiting": null, "success_per_second": null, "failure_per_second": null,
        "time_to_first_token_seconds": null, "inter_token_latency_seconds": null, "e2e_latency_seconds": null},
        "tokens": {"prompt_per_second": null, "generation_per_second": null},
        "cache": {"token_usage": null, "hit_rate": null, "kv_capacity_tokens": null},
        "system": {"generation_throughput": null, "utilization": null}, "sources": {}}}]}"#;
    require_test_deps();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/py/validate_json.py"))
        .arg("engines")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    let good = bad.replace(r#""running": "3""#, r#""running": 3"#);
    std::fs::write(&file, good).unwrap();
    common::validate_json("engines", &[std::fs::read_to_string(&file).unwrap()]);
}

/// The real SMG fan-in sample (an SGLang gRPC worker's scheduler metrics, spelled
/// `sglang_`, with `worker_addr` on every sample): the gauges it carries, nothing made
/// up for what it lacks.
#[test]
fn the_real_smg_sample_gives_its_gauges_and_nulls_elsewhere() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smg-engine-metrics-sample.prom"
    );
    let body = std::fs::read_to_string(path).unwrap();
    let scrape = Scrape {
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        families: vec![MetricFamily {
            name: "fixture".into(),
            kind: FamilyType::Gauge,
            help: String::new(),
            samples: parse(&body),
        }],
    };
    let v = engine_view(None, &scrape);
    assert_eq!(v.kind, Some("sglang"));
    assert_eq!(v.requests.running, Some(3.0));
    assert_eq!(v.requests.waiting, Some(0.0));
    assert_eq!(v.cache.token_usage, Some(0.002074936375923919));
    assert_eq!(v.cache.kv_capacity_tokens, Some(410615.0));
    assert_eq!(v.cache.hit_rate, Some(0.0));
    assert_eq!(v.system.generation_throughput, Some(450.51289169675726));
    assert_eq!(v.system.utilization, Some(0.0));
    // One scrape: no rates; the scheduler-side sample has no request histograms.
    assert_eq!(v.requests.success_per_second, None);
    assert_eq!(v.requests.time_to_first_token_seconds, None);
    assert_eq!(
        v.sources["requests.running"],
        vec!["sglang_num_running_reqs"]
    );
    assert_eq!(v.sources.len(), 7, "{:?}", v.sources);
    // The same sample twice, 5 s apart: an interval, but still no token counter to rate.
    let later = Scrape {
        at: scrape.at + Duration::from_secs(5),
        families: scrape.families.clone(),
    };
    let v = engine_view(Some(&scrape), &later);
    assert_eq!(v.interval_seconds, Some(5.0));
    assert_eq!(v.tokens.generation_per_second, None);
    assert_eq!(v.counter_resets, 0);
}

/// docs/engine-view.md and the schema name every field of the code's source table
/// with its metrics, and the doc's worked example is a valid worker entry.
#[test]
fn docs_and_schema_follow_the_source_table() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/engine-view.md")).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/proto/schema/engines.schema.json")).unwrap(),
    )
    .unwrap();
    for f in FIELDS {
        assert!(
            doc.contains(&format!("`{}`", f.path)),
            "doc lacks {}",
            f.path
        );
        let (group, name) = f.path.split_once('.').unwrap();
        let desc = schema["$defs"]["view"]["properties"][group]["properties"][name]["description"]
            .as_str()
            .unwrap_or_else(|| panic!("schema lacks {}", f.path));
        for src in [f.sglang, f.vllm].into_iter().flatten() {
            for m in src.metrics {
                assert!(desc.contains(m), "schema's {} lacks {m}", f.path);
                assert!(doc.contains(m), "doc lacks {m}");
            }
        }
    }
    let start = doc.find("```json\n").expect("worked example") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let entry: Value = serde_json::from_str(&doc[start..end]).unwrap();
    let wrapped = serde_json::json!({"generated_at_ns": 1, "workers": [entry]});
    common::validate_json("engines", &[wrapped.to_string()]);
}
