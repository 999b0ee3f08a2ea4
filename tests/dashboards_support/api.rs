//! The HTTP API of the real Prometheus the live test scrapes with.

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// A Prometheus server's query API.
pub struct Api {
    pub url: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn get(&self, path: &str, params: &[(&str, String)]) -> Value {
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
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.get("/api/v1/query", &[("query", expr.to_string())])
            .await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Largest value any series of `expr` took between `start` and now.
    pub async fn range_max(&self, expr: &str, start: f64) -> Option<f64> {
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
    pub async fn label_values(&self, query: &str) -> Vec<String> {
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

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
