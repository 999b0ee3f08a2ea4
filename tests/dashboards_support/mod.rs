//! What the dashboard tests share: the shipped files, the dashboard's panels, queries
//! and variables, and the checks of its structure.

pub mod api;
pub mod checks;
pub mod promql;
pub mod scenario;

use crate::common::repo_root;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub const DASHBOARD: &str = "dashboards/fpm-exporter.json";
pub const RULES: &str = "dashboards/fpm-rules.yml";
/// The scrape job the rules' exporter-down alert names.
pub const JOB: &str = "fpm-exporter";
/// What the test puts for Grafana's `$__rate_interval` (4 scrapes of 1 s, plus margin).
pub const RATE_INTERVAL: &str = "10s";

/// The shipped dashboard, parsed.
pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).expect("dashboard JSON");
    serde_json::from_str(&text).expect("dashboard is valid JSON")
}

/// Every panel, rows' nested panels included.
pub fn all_panels(d: &Value) -> Vec<&Value> {
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
pub fn panel_exprs(d: &Value) -> Vec<(String, String)> {
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
pub fn query_variables(d: &Value) -> Vec<(String, String)> {
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

/// Whether a data source is the `${datasource}` variable of type prometheus.
pub fn is_prometheus_variable_ds(ds: &Value) -> bool {
    ds == &json!({"type": "prometheus", "uid": "${datasource}"})
}

/// A data source variable of type prometheus, so the import asks for no fixed uid; the
/// variables an on-call engineer filters by; every query variable a `label_values` on it.
pub fn check_variables(d: &Value) {
    // A data source variable of type prometheus, so the import asks for no fixed uid.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    for want in ["job", "engine", "node", "worker_id", "dp_rank", "window"] {
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
}

/// Unique ids, every panel and target on the data source variable, the 24-column grid,
/// and the sections an on-call engineer looks for.
pub fn check_panels(d: &Value) {
    // Unique ids, and every panel and target on the data source variable.
    let mut ids = BTreeSet::new();
    let panels = all_panels(d);
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
}
