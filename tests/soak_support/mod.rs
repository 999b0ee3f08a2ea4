//! The soak's exporter process, its per-rank accounting read from `/v1/ranks`, and the
//! load frames.

use crate::common;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use std::time::{Duration, Instant};

/// The exporter binary under test, in its own process so that its memory and CPU are
/// measured apart from the publishers'.
pub struct ExporterProc {
    pub child: std::process::Child,
    pub url: String,
}

impl ExporterProc {
    pub async fn spawn(args: &[&str]) -> ExporterProc {
        let port = common::free_port_range(1);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn fpm-exporter");
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while reqwest::get(format!("{url}/healthz")).await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "exporter did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ExporterProc { child, url }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// (CPU seconds, resident bytes) of the exporter process.
    pub fn usage(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0;
        (cpu, f[21].parse::<f64>().unwrap() * 4096.0)
    }
}

impl Drop for ExporterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One rank's accounting as the exporter reports it in `/v1/ranks`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub frames: u64,
    pub iterations: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub restarts: u64,
    pub last_sequence: u64,
}

/// Per (engine index, dp_rank): what the exporter has accounted for.
pub async fn seen(exp: &ExporterProc) -> std::collections::HashMap<(usize, usize), Seen> {
    let body = reqwest::get(format!("{}/v1/ranks", exp.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = |r: &serde_json::Value, k: &str| r["counters"][k].as_u64().unwrap();
    v["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let e: usize = r["engine"].as_str().unwrap()[1..].parse().unwrap();
            let key = (e, r["dp_rank"].as_u64().unwrap() as usize);
            let s = Seen {
                frames: n(r, "frames"),
                iterations: n(r, "iterations"),
                missed: n(r, "missed_frames"),
                duplicates: n(r, "duplicate_frames"),
                restarts: n(r, "publisher_restarts"),
                last_sequence: r["last_sequence"].as_u64().unwrap_or(0),
            };
            (key, s)
        })
        .collect()
}

/// Load frame `i` of a rank: a busy mixed iteration.
pub fn frame(engine: usize, rank: usize, i: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: format!("w{engine}"),
        dp_rank: rank as u64,
        wall_time: Real(0.01 + (i % 50) as f64 * 0.0005),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(16 + i % 32),
            sum_decode_kv_tokens: Count(40_000 + i % 1000),
            num_prefill_requests: Count(i % 2),
            sum_prefill_tokens: Count((i % 2) * 2048),
            ..Default::default()
        },
        ..Default::default()
    }
}
