//! The shipped Grafana dashboard and Prometheus rules, proven against a real
//! Prometheus (Debian's `prometheus`, installed by scripts/test-deps.sh) scraping a
//! running exporter that real SGLang publishers feed.
//!
//! The scenario makes every panel and every alert have something to show: busy ranks,
//! an idle one, a restarting one, one that stops and expires, one that stops and stays
//! stale, one whose queue grows with no prefill, one with sequence gaps and garbage
//! messages, an endpoint nobody binds, and a scrape target that is down. The exporter
//! runs at the default `--rank-detail lean`, so every panel and rule reads lean or
//! engine-level families.

mod common;

use common::prometheus::Prometheus;
use common::{repo_root, wait_for, Driver, Exporter};
use fpm_exporter::publish::FramePublisher;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DASHBOARD: &str = "dashboards/fpm-exporter.json";
const RULES: &str = "dashboards/fpm-rules.yml";
/// The scrape job the rules' exporter-down alert names.
const JOB: &str = "fpm-exporter";
/// What the test puts for Grafana's `$__rate_interval` (4 scrapes of 1 s, plus margin).
const RATE_INTERVAL: &str = "10s";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).expect("dashboard JSON");
    serde_json::from_str(&text).expect("dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, expr) of every query target of the dashboard.
fn panel_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let expr = t["expr"].as_str().expect("every target has a PromQL expr");
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                expr.to_string(),
            ));
        }
    }
    out
}

/// The dashboard's query variables, in order: (name, label_values query).
fn query_variables(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["query"]["query"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn is_prometheus_variable_ds(ds: &Value) -> bool {
    ds == &json!({"type": "prometheus", "uid": "${datasource}"})
}

#[test]
fn dashboard_is_structurally_sound() {
    let d = dashboard();
    // A data source variable of type prometheus, so the import asks for no fixed uid.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    for want in ["job", "engine", "worker_id", "dp_rank", "window"] {
        assert!(names.contains(&want), "variable {want} missing: {names:?}");
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(
            is_prometheus_variable_ds(&v["datasource"]),
            "variable {} data source {}",
            v["name"],
            v["datasource"]
        );
        assert!(
            v["query"]["query"]
                .as_str()
                .unwrap()
                .starts_with("label_values("),
            "{}",
            v["name"]
        );
    }
    // Unique ids, and every panel and target on the data source variable.
    let mut ids = BTreeSet::new();
    let panels = all_panels(&d);
    assert!(panels.len() > 20, "only {} panels", panels.len());
    for p in &panels {
        let id = p["id"].as_u64().expect("numeric panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert!(
            is_prometheus_variable_ds(&p["datasource"]),
            "panel {title:?} data source {}",
            p["datasource"]
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                is_prometheus_variable_ds(&t["datasource"]),
                "a target of {title:?} has data source {}",
                t["datasource"]
            );
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "refId repeated in {title:?}"
            );
        }
        // Grid positions stay on Grafana's 24-column grid.
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title:?} overflows the grid"
        );
    }
    // The sections an on-call engineer looks for.
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Fleet overview",
        "Per engine and rank",
        "Health",
        "Ranks stale",
        "Decode errors/s by reason",
        "Exporter resident memory",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}");
    }
    // Every query of the exporter's series is scoped to the selected job, so that two
    // exporter deployments in one Prometheus never mix.
    for (title, expr) in panel_exprs(&d) {
        if expr.contains("fpm") || expr.contains("process_") || expr.starts_with("up") {
            let selectors = expr.matches('{').count();
            assert_eq!(
                expr.matches("job=\"$job\"").count(),
                selectors,
                "panel {title:?} not scoped to $job: {expr}"
            );
        }
    }
}

#[test]
fn dashboard_json_matches_its_generator() {
    common::require_test_deps();
    let out = Command::new(common::venv_python())
        .arg(repo_root().join("dashboards/gen_dashboard.py"))
        .output()
        .expect("run dashboards/gen_dashboard.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        generated == dashboard(),
        "dashboards/fpm-exporter.json is stale: re-run dashboards/gen_dashboard.py"
    );
}

#[test]
fn promtool_accepts_the_rules() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo_root().join(RULES))
        .output()
        .expect("promtool on PATH (scripts/test-deps.sh installs Debian's prometheus)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
    // Guards the check above: promtool really rejects a broken rule.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
    )
    .unwrap();
    assert!(!Command::new("promtool")
        .args(["check", "rules"])
        .arg(&bad)
        .output()
        .unwrap()
        .status
        .success());
}

// ---------------------------------------------------------------------------
// PromQL text helpers

/// Aggregation operators: calls even when `by (...)` or `without (...)` comes first.
const AGGREGATORS: [&str; 12] = [
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];
const KEYWORDS: [&str; 10] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
];

/// Metric names an expression reads: identifiers outside strings, label matchers and
/// range brackets that are neither functions, keywords, nor labels in a grouping clause.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // label_values(selector, label): only the selector names a metric.
    let expr = match expr.strip_prefix("label_values(") {
        Some(rest) => rest.rsplit_once(',').map(|(sel, _)| sel).unwrap_or(rest),
        None => expr,
    };
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '{' || ch == '[' {
            let close = if ch == '{' { '}' } else { ']' };
            while i < c.len() && c[i] != close {
                if c[i] == '"' {
                    i += 1;
                    while i < c.len() && c[i] != '"' {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let call = c.get(j) == Some(&'(');
            if KEYWORDS.contains(&word.as_str()) {
                // by (...), on (...) and the like list labels, not metrics.
                if call && !matches!(word.as_str(), "and" | "or" | "unless" | "bool") {
                    while i < c.len() && c[i] != ')' {
                        i += 1;
                    }
                }
            } else if !call && !AGGREGATORS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_name_extraction() {
    let got = metric_names(
        r#"sum by (engine, state) (rate(a_total{x="{b}", y=~"c|d"}[$__rate_interval])) / ignoring(state) b:c:rate1m > 0.5e3 and on (job) up"#,
    );
    assert_eq!(
        got,
        ["a_total", "b:c:rate1m", "up"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        metric_names(r#"label_values(fpm_up{job="$job"}, worker_id)"#),
        ["fpm_up".to_string()].into()
    );
    assert_eq!(
        metric_names("max without (quantile) (x_seconds) * 2 + count(y)"),
        ["x_seconds".to_string(), "y".to_string()].into()
    );
}

/// Grafana's rendering of a multi-value variable for Prometheus: `(a|b)`, regex-escaped.
fn regex_of(values: &[String]) -> String {
    let esc = |v: &String| {
        v.chars()
            .flat_map(|ch| {
                let special = "\\.+*?()|[]{}^$".contains(ch);
                special
                    .then_some('\\')
                    .into_iter()
                    .chain(std::iter::once(ch))
            })
            .collect::<String>()
    };
    format!("({})", values.iter().map(esc).collect::<Vec<_>>().join("|"))
}

fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut e = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", "2s");
    // Longest names first, so $dp_rank is not read as $dp.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        e = e
            .replace(&format!("${{{n}}}"), &vars[n])
            .replace(&format!("${n}"), &vars[n]);
    }
    assert!(!e.contains('$'), "unsubstituted variable in {e}");
    e
}

// ---------------------------------------------------------------------------
// A real Prometheus

struct Api {
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .expect("Prometheus answers");
        let status = r.status();
        let v: Value = r.json().await.expect("Prometheus JSON");
        assert!(
            status.is_success() && v["status"] == "success",
            "{path} {params:?}: {status} {v}"
        );
        v["data"].clone()
    }

    /// Instant query: the result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.get("/api/v1/query", &[("query", expr.to_string())])
            .await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Largest value any series of `expr` took between `start` and now.
    async fn range_max(&self, expr: &str, start: f64) -> Option<f64> {
        let now = unix_now();
        let data = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", expr.to_string()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{now:.3}")),
                    ("step", "1".into()),
                ],
            )
            .await;
        data["result"]
            .as_array()?
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p[1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }

    /// `label_values(selector, label)` the way Grafana resolves it: from the series API.
    async fn label_values(&self, query: &str) -> Vec<String> {
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let series = self
            .get(
                "/api/v1/series",
                &[("match[]", selector.trim().to_string())],
            )
            .await;
        let set: BTreeSet<String> = series
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s[label.trim()].as_str().map(str::to_string))
            .collect();
        set.into_iter().collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// The scenario

/// A real-module encoding of a busy frame for the test's own vllm rank 1.
fn faulty_payload(d: &mut Driver, seq: u64) -> bytes::Bytes {
    let mut m = sglang_frame(seq);
    m["worker_id"] = json!("vllm-b");
    m["dp_rank"] = json!(1);
    m["counter_id"] = json!(seq);
    let hex = d.cmd(json!({"cmd": "encode", "metrics": m}))["hex"]
        .as_str()
        .unwrap()
        .to_string();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn sglang_frame(i: u64) -> Value {
    json!({
        "wall_time": 0.02 + (i % 10) as f64 * 0.003,
        "scheduled_requests": {
            "num_prefill_requests": 2, "sum_prefill_tokens": 1500 + (i % 7) * 100, "var_prefill_length": 40000.0 + i as f64,
            "sum_prefill_kv_tokens": 256, "num_decode_requests": 30 + i % 5, "sum_decode_kv_tokens": 60000 + 100 * i,
            "var_decode_kv_tokens": 1.0e6
        },
        "queued_requests": {
            "num_prefill_requests": 4, "sum_prefill_tokens": 6000, "var_prefill_length": 250000.0,
            "num_decode_requests": 1, "sum_decode_kv_tokens": 800, "var_decode_kv_tokens": 0.0
        }
    })
}

/// A decode-only iteration whose prefill queue keeps growing: requests pile up, none is admitted.
fn stuck_queue_frame(tick: u64) -> Value {
    json!({
        "wall_time": 0.015,
        "scheduled_requests": {"num_decode_requests": 64, "sum_decode_kv_tokens": 120000, "var_decode_kv_tokens": 2.0e6},
        "queued_requests": {
            "num_prefill_requests": 1 + tick / 2, "sum_prefill_tokens": 1000 + 300 * tick, "var_prefill_length": 1000.0,
            "num_decode_requests": 2, "sum_decode_kv_tokens": 3000, "var_decode_kv_tokens": 0.0
        }
    })
}

fn labels_of(alert: &Value) -> (String, String) {
    let l = &alert["labels"];
    (
        l["engine"].as_str().unwrap_or_default().to_string(),
        l["dp_rank"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_rule_returns_data_from_a_real_prometheus() {
    let t0 = Instant::now();
    let started_unix = unix_now();
    let tcp = common::free_port_range(3);
    let dir = common::ipc_dir();
    let ipc = format!("ipc://{}/sgl", dir.path().display());
    let cfg = dir.path().join("engines.toml");
    std::fs::write(
        &cfg,
        format!(
            "stale_after = \"2s\"\nexpire_after = \"10s\"\nwindows = [\"20s\", \"60s\"]\n\
             [[engine]]\nname = \"sglang\"\nendpoint = \"{ipc}\"\nranks = 4\nlabels = {{ model = \"m1\", role = \"prefill\" }}\n\
             [[engine]]\nname = \"vllm\"\nendpoint = \"tcp://127.0.0.1:{tcp}\"\nranks = 3\nlabels = {{ model = \"m1\", role = \"decode\" }}\n"
        ),
    )
    .unwrap();
    let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
    let exporter_target = exp.url.trim_start_matches("http://").to_string();
    // A second target of the same job where nothing listens: the exporter-down alert's case.
    let dead_target = format!("127.0.0.1:{}", common::free_port());
    let prom = Prometheus::start(
        JOB,
        &[exporter_target.clone(), dead_target.clone()],
        Some(&repo_root().join(RULES)),
    );
    let api = Api {
        url: prom.url.clone(),
        client: reqwest::Client::new(),
    };

    // Real publishers: sglang 0-3 over ipc, vllm 0 over tcp. vllm 1 is the test's own
    // byte-exact publisher, for what the real one never sends (gaps, garbage); vllm 2
    // is configured but never started.
    let mut d = Driver::spawn();
    for r in 0..4u64 {
        d.start(
            r,
            &format!("{ipc}.{r}"),
            &format!("sgl-{}", if r < 2 { "a" } else { "b" }),
        );
    }
    d.cmd(json!({"cmd": "start", "key": "v0", "rank": 0, "endpoint": format!("tcp://127.0.0.1:{tcp}"), "worker_id": "vllm-a"}));
    let mut faulty = FramePublisher::bind(&format!("tcp://127.0.0.1:{}", tcp + 1))
        .await
        .expect("bind vllm rank 1");
    let mut faulty_seq = 0u64;

    // Until the exporter sees every started rank (the faulty one once it is subscribed).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = faulty_payload(&mut d, faulty_seq);
        faulty.send_raw(faulty_seq, p).await.unwrap();
        faulty_seq += 1;
        let m = exp.metrics().await;
        let up = |e: &str, r: &str| {
            common::sample(&m, "fpm_up", &[("engine", e), ("dp_rank", r)]) == Some(1.0)
        };
        if ["0", "1", "2", "3"].iter().all(|r| up("sglang", r))
            && up("vllm", "0")
            && up("vllm", "1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "ranks not up after 30 s:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = async {
            reqwest::get(format!("{}/api/v1/query?query=fpm_up", prom.url))
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        };
        if r.await
            .is_some_and(|r| r["data"]["result"].as_array().is_some_and(|a| a.len() >= 6))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the exporter within 40 s; its log:\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("ranks up and scraped after {:?}", t0.elapsed());

    // sglang rank 3 goes away now: stale after 2 s, expired after 10 s.
    d.stop(3);
    // 12 s of traffic, a tick every 250 ms.
    let mut i = 0u64;
    for tick in 0..48u64 {
        let tick_end = tokio::time::Instant::now() + Duration::from_millis(250);
        for r in 0..2u64 {
            for _ in 0..3 {
                d.cmd(json!({"cmd": "publish", "rank": r, "metrics": sglang_frame(i), "backpressure": true}));
                i += 1;
            }
        }
        d.cmd(json!({"cmd": "publish", "key": "v0", "metrics": stuck_queue_frame(tick), "backpressure": true}));
        // Every other sequence number of the faulty rank never arrives.
        faulty_seq += 1;
        let p = faulty_payload(&mut d, faulty_seq);
        faulty.send_raw(faulty_seq, p).await.unwrap();
        faulty_seq += 1;
        if tick % 8 == 3 {
            // Not msgpack at all, then a message with the wrong number of frames.
            faulty
                .send_raw(
                    faulty_seq,
                    bytes::Bytes::from_static(b"\xc1 not an FPM frame"),
                )
                .await
                .unwrap();
            faulty.send_frames(vec![bytes::Bytes::new()]).await.unwrap();
        }
        if tick == 12 || tick == 24 || tick == 36 {
            d.restart(1);
        }
        tokio::time::sleep_until(tick_end).await;
    }
    // The faulty rank falls silent too: stale from now on (it would expire 10 s later).
    let silent_at = Instant::now();
    eprintln!("traffic done after {:?}", t0.elapsed());

    // Every alert of the rules file must be pending or firing, for the right series only.
    let rules = api.get("/api/v1/rules", &[]).await;
    let mut alert_rules = Vec::new();
    let mut record_rules = Vec::new();
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let entry = (
                r["name"].as_str().unwrap().to_string(),
                r["query"].as_str().unwrap().to_string(),
            );
            match r["type"].as_str().unwrap() {
                "alerting" => alert_rules.push(entry),
                _ => record_rules.push(entry),
            }
            assert_eq!(r["health"], "ok", "rule {} is unhealthy: {r}", r["name"]);
        }
    }
    assert!(
        alert_rules.len() >= 9 && record_rules.len() >= 5,
        "Prometheus loaded {alert_rules:?} {record_rules:?}"
    );
    let expected: BTreeMap<&str, BTreeSet<(String, String)>> = [
        ("FpmEndpointDisconnected", vec![("vllm", "2")]),
        ("FpmRankStale", vec![("vllm", "1")]),
        ("FpmRankDown", vec![("vllm", "1")]),
        ("FpmRankExpired", vec![("sglang", "")]),
        ("FpmFrameLoss", vec![("vllm", "1")]),
        ("FpmPublisherCrashLoop", vec![("sglang", "1")]),
        ("FpmDecodeErrors", vec![("vllm", "1")]),
        ("FpmQueueGrowingWithoutProgress", vec![("vllm", "0")]),
        ("FpmExporterTargetDown", vec![("", "")]),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k,
            v.into_iter()
                .map(|(e, r)| (e.to_string(), r.to_string()))
                .collect(),
        )
    })
    .collect();
    let active = wait_for(
        "every alert pending or firing",
        Duration::from_secs(40),
        || async {
            let alerts = api.get("/api/v1/alerts", &[]).await["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut by_name: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
            for a in &alerts {
                by_name
                    .entry(a["labels"]["alertname"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(labels_of(a));
            }
            expected
                .iter()
                .all(|(name, want)| by_name.get(*name).is_some_and(|got| want.is_subset(got)))
                .then_some(alerts)
        },
    )
    .await;
    eprintln!(
        "all alerts active {:?} after the faulty rank fell silent",
        silent_at.elapsed()
    );
    for name in alert_rules.iter().map(|(n, _)| n) {
        assert!(
            expected.contains_key(name.as_str()),
            "alert {name} has no scenario in this test"
        );
    }
    // Only the series that should alert do: live ranks are not stale, ranks that
    // prefill are not "stuck", the target that answers is not down.
    for a in &active {
        let name = a["labels"]["alertname"].as_str().unwrap();
        let got = labels_of(a);
        match name {
            "FpmRankStale"
            | "FpmRankDown"
            | "FpmFrameLoss"
            | "FpmQueueGrowingWithoutProgress"
            | "FpmPublisherCrashLoop" => {
                assert!(
                    expected[name].contains(&got),
                    "{name} wrongly active for {got:?}: {a}"
                )
            }
            "FpmDecodeErrors" => assert_eq!(got, ("vllm".into(), "1".into()), "{a}"),
            "FpmExporterTargetDown" => {
                assert_eq!(a["labels"]["instance"], dead_target.as_str(), "{a}")
            }
            "FpmEndpointDisconnected" => assert!(
                got == ("vllm".into(), "2".into()) || got == ("sglang".into(), "3".into()),
                "endpoint of a live rank reported disconnected: {a}"
            ),
            _ => {}
        }
    }
    let decode_reasons: BTreeSet<&str> = active
        .iter()
        .filter(|a| a["labels"]["alertname"] == "FpmDecodeErrors")
        .map(|a| a["labels"]["reason"].as_str().unwrap())
        .collect();
    assert!(decode_reasons.contains("frame_count"), "{decode_reasons:?}");

    // Every rule expression through the query API returns data.
    for (name, query) in alert_rules.iter().chain(&record_rules) {
        let result = api.query(query).await;
        assert!(!result.is_empty(), "rule {name} returned no data: {query}");
    }
    let loss = api
        .query("fpm:frame_loss_ratio:rate5m{engine=\"vllm\", dp_rank=\"1\"}")
        .await;
    let ratio: f64 = loss[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        (0.3..=0.7).contains(&ratio),
        "every other frame lost, yet loss ratio {ratio}"
    );

    // The wall-time summaries' _sum and _count are cumulative: across every scrape (a
    // restart, an expiry and emptying windows included) none went down, and
    // rate(_sum) / rate(_count) is the mean wall_time of what was sent (0.015-0.047 s).
    for fam in [
        "fpm_wall_time_window_seconds",
        "fpm_engine_wall_time_window_seconds",
    ] {
        for suffix in ["_sum", "_count"] {
            let q = format!("max(resets({fam}{suffix}[5m]))");
            let r = api.query(&q).await;
            assert_eq!(r[0]["value"][1], "0", "{q}: {r:?}");
        }
        let q = format!(
            "rate({fam}_sum{{window=\"20s\"}}[30s]) / rate({fam}_count{{window=\"20s\"}}[30s]) > 0"
        );
        let r = api.query(&q).await;
        assert!(!r.is_empty(), "no mean wall time from {q}");
        for s in &r {
            let mean: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
            assert!((0.015..=0.047).contains(&mean), "{q}: {s}");
        }
    }

    // The dashboard: resolve the variables as Grafana would, then evaluate every query.
    let dash = dashboard();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut windows = Vec::new();
    for (name, query) in query_variables(&dash) {
        let q = substitute(&query, &vars);
        let values = api.label_values(&q).await;
        assert!(!values.is_empty(), "variable {name} ({q}) has no values");
        let value = match name.as_str() {
            "job" => {
                assert_eq!(values, vec![JOB.to_string()]);
                JOB.to_string()
            }
            "window" => {
                windows = values.clone();
                values[0].clone()
            }
            _ => regex_of(&values),
        };
        vars.insert(name, value);
    }
    assert_eq!(windows, vec!["20s".to_string(), "60s".to_string()]);
    eprintln!("variables {vars:?}");
    // Queries where zero is the honest reading in this scenario (nobody streams, nothing refused).
    let may_stay_zero = [
        "fpm_exporter_stream_clients",
        "fpm_exporter_refused_frames_total",
    ];
    let exprs = panel_exprs(&dash);
    for (title, expr) in &exprs {
        let window_values: &[String] = if expr.contains("$window") {
            &windows
        } else {
            &windows[..1]
        };
        for w in window_values {
            vars.insert("window".into(), w.clone());
            let q = substitute(expr, &vars);
            let result = api.query(&q).await;
            assert!(!result.is_empty(), "panel {title:?} has no data now: {q}");
            if !may_stay_zero.iter().any(|m| expr.contains(m)) {
                let max = api.range_max(&q, started_unix).await;
                assert!(
                    max.is_some_and(|m| m > 0.0),
                    "panel {title:?} stayed at zero (max {max:?}): {q}"
                );
            }
        }
    }
    eprintln!(
        "{} dashboard queries evaluated, {:?} since the faulty rank fell silent",
        exprs.len(),
        silent_at.elapsed()
    );

    // Every metric a query or rule names is in the exporter's live output or is a
    // recording rule (or Prometheus' own `up` and `ALERTS`).
    let exposition = exp.metrics().await;
    // All of the above ran at the default per-rank detail, lean: its full-only
    // families are absent, the engine aggregates are not.
    for fam in fpm_exporter::sink::prometheus::ranks::full_only_families() {
        assert!(
            !exposition.contains(&format!("\n{}{{", fam.name)),
            "{} written at the default --rank-detail",
            fam.name
        );
    }
    assert!(exposition.contains("\nfpm_engine_window_variance{"));
    let mut known: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    known.extend(record_rules.iter().map(|(n, _)| n.clone()));
    known.extend(["up".to_string(), "ALERTS".to_string()]);
    let mut checked = 0;
    for expr in exprs
        .iter()
        .map(|(_, e)| e)
        .chain(query_variables(&dash).iter().map(|(_, q)| q))
        .chain(alert_rules.iter().chain(&record_rules).map(|(_, q)| q))
    {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name),
                "{name} (in {expr}) is not in the exporter's output nor a recording rule"
            );
            checked += 1;
        }
    }
    assert!(checked > 50);

    drop(d);
    faulty.close().await;
    exp.stop().await;
    // A guard on the suite's time budget (the scenario takes ~20 s on an idle machine),
    // not a performance claim: loose enough for a loaded one.
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
}
