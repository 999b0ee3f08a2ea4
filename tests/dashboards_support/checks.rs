//! The checks of the live test, each against the running scenario's Prometheus: the
//! alerts (for exactly the right series), every rule, the wall-time summaries, every
//! dashboard query, and that every metric they name exists.

use super::api::Api;
use super::promql::{metric_names, regex_of, substitute};
use super::{panel_exprs, query_variables, JOB};
use crate::common::wait_for;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Alerts only a fleet raises (NATS between edges and a central): tests/fleet_prometheus.rs
/// makes them fire; the single exporter of tests/dashboards.rs has no NATS.
pub const FLEET_ALERTS: [&str; 1] = ["FpmNatsLoss"];
/// The families only an exporter with NATS writes (panels and rules on them: ditto).
pub const FLEET_FAMILIES: &str = "fpm_nats_";

/// (name, expression) of every rule Prometheus loaded, by kind.
pub struct Rules {
    /// Alerting rules.
    pub alerts: Vec<(String, String)>,
    /// Recording rules.
    pub records: Vec<(String, String)>,
}

/// The rules Prometheus loaded from the shipped file, every one healthy.
pub async fn loaded_rules(api: &Api) -> Rules {
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
    Rules {
        alerts: alert_rules,
        records: record_rules,
    }
}

/// Per alert, the (engine, dp_rank) series the scenario must make it fire for.
fn expected_alerts() -> BTreeMap<&'static str, BTreeSet<(String, String)>> {
    [
        ("FpmEndpointDisconnected", vec![("vllm", "2")]),
        ("FpmRankStale", vec![("vllm", "1")]),
        ("FpmRankDown", vec![("vllm", "1")]),
        ("FpmRankExpired", vec![("sglang", "")]),
        ("FpmFrameLoss", vec![("vllm", "1")]),
        ("FpmPublisherCrashLoop", vec![("sglang", "1")]),
        ("FpmDecodeErrors", vec![("vllm", "1")]),
        ("FpmQueueGrowingWithoutProgress", vec![("vllm", "0")]),
        ("FpmExporterTargetDown", vec![("", "")]),
        ("FpmEngineImbalanced", vec![("dp", "")]),
        ("FpmRankStraggler", vec![("dp", "1")]),
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
    .collect()
}

/// Every alert of the rules file pending or firing, for the right series only.
pub async fn alerts_fire_for_the_right_series(
    api: &Api,
    rules: &Rules,
    dead_target: &str,
    silent_at: Instant,
) {
    let alert_rules = &rules.alerts;
    let expected = expected_alerts();
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
    for name in alert_rules
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !FLEET_ALERTS.contains(&n.as_str()))
    {
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
            | "FpmPublisherCrashLoop"
            | "FpmRankStraggler" => {
                assert!(
                    expected[name].contains(&got),
                    "{name} wrongly active for {got:?}: {a}"
                )
            }
            "FpmDecodeErrors" => assert_eq!(got, ("vllm".into(), "1".into()), "{a}"),
            // The skewed engine only, for its prefill tokens only, naming rank 3.
            "FpmEngineImbalanced" => {
                assert_eq!(got, ("dp".into(), "".into()), "{a}");
                assert_eq!(a["labels"]["measure"], "prefill_tokens", "{a}");
                let summary = a["annotations"]["summary"].as_str().unwrap_or_default();
                assert!(summary.contains("rank 3 carries 2.00x"), "{a}");
            }
            "FpmExporterTargetDown" => {
                assert_eq!(a["labels"]["instance"], dead_target, "{a}")
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
}

/// Every rule expression through the query API returns data; the loss ratio of the
/// half-lost rank is about one half.
pub async fn rule_expressions_return_data(api: &Api, rules: &Rules) {
    let (alert_rules, record_rules) = (&rules.alerts, &rules.records);
    for (name, query) in alert_rules.iter().chain(record_rules) {
        if FLEET_ALERTS.contains(&name.as_str()) {
            continue;
        }
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
}

/// The wall-time summaries' _sum and _count are cumulative: across every scrape (a
/// restart, an expiry and emptying windows included) none went down, and
/// rate(_sum) / rate(_count) is the mean wall_time of what was sent (0.015-0.047 s).
pub async fn wall_time_summaries_are_cumulative(api: &Api) {
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
            // Prometheus' float division may land a rounding below 0.015.
            assert!((0.015 - 1e-12..=0.047 + 1e-12).contains(&mean), "{q}: {s}");
        }
    }
}

/// The dashboard's variables resolved as Grafana would, then every query evaluated,
/// once per `$window` value: data now, and above zero at some point of the scenario.
/// Returns (panel title, expr) of every query.
pub async fn dashboard_queries_return_data(
    api: &Api,
    dash: &Value,
    started_unix: f64,
    silent_at: Instant,
) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut windows = Vec::new();
    for (name, query) in query_variables(dash) {
        let q = substitute(&query, &vars);
        let values = api.label_values(&q).await;
        // Node at "All" (the default, `.*`): the ranks of Dynamo's own publishers at the
        // central exporter, and every rank of an exporter that relays nothing, have no
        // node label, which a list of the nodes would not match.
        if name == "node" {
            vars.insert(name, ".*".into());
            continue;
        }
        assert!(!values.is_empty(), "variable {name} ({q}) has no values");
        let value = match name.as_str() {
            "job" => {
                assert!(values.contains(&JOB.to_string()), "{values:?}");
                regex_of(&values)
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
    let exprs = panel_exprs(dash);
    for (title, expr) in exprs.iter().filter(|(_, e)| !e.contains(FLEET_FAMILIES)) {
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
    exprs
}

/// Every metric a query or rule names is in the exporter's live output or is a
/// recording rule (or Prometheus' own `up` and `ALERTS`); the output is lean.
pub fn metric_names_are_exported(
    exposition: &str,
    dash: &Value,
    exprs: &[(String, String)],
    rules: &Rules,
) {
    let (alert_rules, record_rules) = (&rules.alerts, &rules.records);
    // All of the above ran at the default per-rank detail, lean: its full-only
    // families are absent, the engine aggregates are not.
    for fam in fpm_exporter::sink::prometheus::full_only_families() {
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
        .chain(query_variables(dash).iter().map(|(_, q)| q))
        .chain(alert_rules.iter().chain(record_rules).map(|(_, q)| q))
    {
        for name in metric_names(expr) {
            if name.starts_with(FLEET_FAMILIES) {
                continue;
            }
            assert!(
                known.contains(&name),
                "{name} (in {expr}) is not in the exporter's output nor a recording rule"
            );
            checked += 1;
        }
    }
    assert!(checked > 50);
}

/// (engine, dp_rank) of an alert.
fn labels_of(alert: &Value) -> (String, String) {
    let l = &alert["labels"];
    (
        l["engine"].as_str().unwrap_or_default().to_string(),
        l["dp_rank"].as_str().unwrap_or_default().to_string(),
    )
}
