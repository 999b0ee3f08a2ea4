//! The load side: endpoints, the load generator with its phase switch, and the
//! arithmetic of results (percentiles, latencies, throughput outcomes).

use fpm_exporter::publisher::loadgen::{self, LoadConfig, LoadReport, Phase, SendLog};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A tcp base port with `n` free ports after it, or an ipc base path.
pub(crate) fn endpoint_base(transport: &str, n: u16, tag: &str) -> String {
    if transport == "ipc" {
        let dir = std::env::temp_dir().join(format!("fpm-bench-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        return format!("ipc://{}/{tag}", dir.display());
    }
    // Below the kernel's ephemeral range (32768+), so outgoing connections never take them.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..500 {
        let attempt = NEXT.fetch_add(1, Relaxed);
        let base =
            12_000 + ((std::process::id().wrapping_mul(7919) + attempt * 1_231) % 19_000) as u16;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return format!("tcp://127.0.0.1:{base}");
        }
    }
    panic!("no free range of {n} tcp ports");
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() as f64) * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Outcome of one throughput run.
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    pub(crate) offered: f64,
    pub(crate) sent: u64,
    pub(crate) counted: u64,
    pub(crate) missed: u64,
    pub(crate) rate: f64,
    pub(crate) cpu_cores: f64,
}

impl Throughput {
    pub(crate) fn lost(&self) -> i64 {
        self.sent as i64 - self.counted as i64
    }
}

/// A running load generator and its phase switch.
pub(crate) struct Generator {
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) task: tokio::task::JoinHandle<Result<LoadReport, String>>,
}

impl Generator {
    pub(crate) fn start(
        gen: &tokio::runtime::Handle,
        endpoint: &str,
        ranks: u64,
        rate: Option<f64>,
        secs: f64,
        log: Option<Arc<SendLog>>,
    ) -> Generator {
        let (phase, rx) = watch::channel(Phase::Warmup);
        let config = LoadConfig {
            endpoint: endpoint.into(),
            ranks,
            worker_id: "bench-engine-0".into(),
            rate,
            duration: Duration::from_secs_f64(secs),
            seed: 42,
        };
        let task = gen.spawn(loadgen::run(config, rx, log));
        Generator { phase, task }
    }

    /// One latency measurement's load: a quiet settle, `seconds` (+0.5) of load, then a
    /// hold long enough for the last frames to arrive.
    pub(crate) async fn load_for(&self, seconds: f64) {
        self.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.set(Phase::Load);
        tokio::time::sleep(Duration::from_secs_f64(seconds + 0.5)).await;
        self.set(Phase::Hold);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    pub(crate) fn set(&self, p: Phase) {
        let _ = self.phase.send(p);
    }

    pub(crate) async fn finish(self) -> LoadReport {
        self.set(Phase::Stop);
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(r))) => r,
            other => panic!("load generator failed: {other:?}"),
        }
    }
}

/// Milliseconds from send to receipt of every received load frame, sorted.
pub(crate) fn latencies(log: &SendLog, got: &[(u64, u64, u64)]) -> Vec<f64> {
    let mut lat: Vec<f64> = got
        .iter()
        .filter_map(|&(rank, seq, at)| {
            log.sent_at(rank as usize, seq)
                .map(|s| at.saturating_sub(s) as f64 / 1e6)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

pub(crate) fn json_u64(s: &str, key: &str) -> Option<u64> {
    let rest = &s[s.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
