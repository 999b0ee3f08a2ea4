//! fpm-bench's `flood` section: a rogue publisher cycling 5,000 worker_ids through one
//! endpoint, every frame an iteration, against the default cap of 4,096 ranks. The
//! exporter must stay bounded: it tracks 4,096, refuses (and counts) the rest, and its
//! resident memory is the cap times the cost of a busy rank.

use super::{endpoint_base, http_get, Bench, Exporter};
use fpm_exporter::publisher::sim::FrameModel;
use fpm_exporter::publisher::socket::FramePublisher;
use std::time::{Duration, Instant};

const IDENTITIES: u64 = 5_000;

/// A sample of the exporter's own metrics, by exact series name.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Bench<'_> {
    pub(crate) async fn flood(&mut self) {
        let base = endpoint_base("tcp", 1, "flood");
        let exp =
            Exporter::spawn(&["--endpoint", &base, "--ranks", "1", "--engine", "flood"]).await;
        let addr = fpm_exporter::address::rank_address(&base, 0).unwrap();
        let rss0 = exp.rss_bytes();
        let (secs, rate) = (self.args.flood_seconds, 20_000.0);
        let sender = self.gen.spawn(async move {
            let mut p = FramePublisher::bind(&addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut model = FrameModel::new("rogue", 0, 9);
            // Until the subscription is through, frames are dropped by the PUB: probe.
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs_f64(secs + 10.0) {
                let f = model.next_iteration();
                f.worker_id = format!("rogue-{}", sent % IDENTITIES);
                p.send(f).await.map_err(|e| e.to_string())?;
                sent += 1;
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                if start.elapsed() >= Duration::from_secs_f64(secs) {
                    break;
                }
            }
            p.close().await;
            Ok::<u64, String>(sent)
        });
        let sent = match sender.await {
            Ok(Ok(n)) => n,
            other => {
                self.result(format!("flood: the publisher failed: {other:?}"));
                return;
            }
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = http_get(&exp.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let (rss, peak) = (exp.rss_bytes(), peak_rss(exp.pid));
        self.result(format!(
            "flood: one publisher cycling {IDENTITIES} worker_ids for {secs:.0} s ({sent} iteration frames at {rate:.0}/s): {} ranks tracked (limit {}), {} frames refused; exporter RSS {:.1} MiB (peak {:.1} MiB; {:.1} MiB before)   [target < 100 MB RSS: {}]",
            metric(&body, "fpm_exporter_ranks_tracked"),
            metric(&body, "fpm_exporter_ranks_limit"),
            metric(&body, "fpm_exporter_refused_frames_total"),
            rss as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            rss0 as f64 / 1048576.0,
            if (peak as f64) < 100e6 { "met" } else { "MISSED" }
        ));
    }
}
