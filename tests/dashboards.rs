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
mod dashboards_support;

use common::repo_root;
use dashboards_support::promql::metric_names;
use dashboards_support::scenario::Scenario;
use dashboards_support::{checks, dashboard, panel_exprs, RULES};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[test]
fn dashboard_is_structurally_sound() {
    let d = dashboard();
    dashboards_support::check_variables(&d);
    dashboards_support::check_panels(&d);
    // Every query of the exporter's series is scoped to the selected jobs (the edges'
    // and the central's, which serve disjoint ranks), so that two exporter deployments
    // in one Prometheus never mix.
    for (title, expr) in panel_exprs(&d) {
        if expr.contains("fpm") || expr.contains("process_") || expr.starts_with("up") {
            let selectors = expr.matches('{').count();
            assert_eq!(
                expr.matches("job=~\"$job\"").count(),
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

/// The live proof: every alert, rule and panel query against a real Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_and_rule_returns_data_from_a_real_prometheus() {
    let mut s = Scenario::start().await;
    s.wait_until_up_and_scraped().await;
    let silent_at = s.run_traffic().await;
    let rules = checks::loaded_rules(&s.api).await;
    checks::alerts_fire_for_the_right_series(&s.api, &rules, &s.dead_target, silent_at).await;
    checks::rule_expressions_return_data(&s.api, &rules).await;
    checks::wall_time_summaries_are_cumulative(&s.api).await;
    let dash = dashboard();
    let exprs =
        checks::dashboard_queries_return_data(&s.api, &dash, s.started_unix, silent_at).await;
    let exposition = s.exp.metrics().await;
    checks::metric_names_are_exported(&exposition, &dash, &exprs, &rules);

    let t0 = s.t0;
    s.stop().await;
    // A guard on the suite's time budget (the scenario takes ~20 s on an idle machine),
    // not a performance claim: loose enough for a loaded one.
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
}
