//! Section scrape: scrape costs and RSS with 1,024 ranks tracked.

use crate::exporter::Exporter;
use crate::http::http_get_timed;
use crate::load::{endpoint_base, percentile, Generator};
use crate::Bench;
use fpm_exporter::publisher::loadgen::Phase;
use std::time::Duration;

impl Bench<'_> {
    /// 1,024 ranks tracked (ipc, one engine), busy for a few seconds: scrape costs and RSS.
    pub(crate) async fn scrape(&mut self) {
        let ranks = 1024u64;
        let base = endpoint_base("ipc", 0, "scrape");
        let flags = [
            "--endpoint",
            &base,
            "--ranks",
            &ranks.to_string(),
            "--engine",
            "bench",
            "--rank-detail",
            &self.args.scrape_detail,
        ];
        let mut exp = Exporter::spawn_env(&flags, &[("FPM_BENCH_COUNT_HEAP", "1")]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss0 = exp.rss_bytes();
        let heap0 = exp.heap_bytes();
        let malloc0 = exp.ask("malloc");
        let busy = self.args.scrape_busy;
        let gen = Generator::start(&self.gen, &base, ranks, Some(20_000.0), busy, None);
        if !exp
            .wait_ranks(ranks as usize, Duration::from_secs(60))
            .await
        {
            eprintln!(
                "fpm-bench: only {} of {ranks} ranks registered",
                exp.counters().ranks
            );
        }
        gen.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_idle = exp.rss_bytes();
        let heap_idle = exp.heap_bytes();
        gen.set(Phase::Load);
        tokio::time::sleep(Duration::from_secs_f64(busy + 0.5)).await;
        gen.set(Phase::Hold);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tracked = exp.counters().ranks;
        let rss1 = exp.rss_bytes();
        let heap1 = exp.heap_bytes();
        let malloc1 = exp.ask("malloc");
        exp.profile("scrape");
        let timings = |path: &str| {
            let mut ms = Vec::new();
            let mut size = 0;
            for _ in 0..10 {
                if let Ok((200, bytes, took)) = http_get_timed(&exp.addr, path) {
                    ms.push(took.as_secs_f64() * 1e3);
                    size = bytes;
                }
            }
            ms.sort_by(|a, b| a.total_cmp(b));
            (
                percentile(&ms, 0.5),
                ms.last().copied().unwrap_or(f64::NAN),
                size,
            )
        };
        let (m50, mmax, msize) = timings("/metrics");
        let (r50, rmax, rsize) = timings("/v1/ranks");
        let rss_scraped = exp.rss_bytes();
        let server = exp.render_timings();
        let report = gen.finish().await;
        self.result(format!(
            "/metrics render inside the exporter with {} ranks, --rank-detail {}: median {:.1} ms ({:.1} ms of it the snapshot), {} bytes   [target <= 20 ms]",
            server["ranks"],
            self.args.scrape_detail,
            server["metrics_ms"].as_f64().unwrap_or(f64::NAN),
            server["snapshot_ms"].as_f64().unwrap_or(f64::NAN),
            server["metrics_bytes"]
        ));
        self.result(format!(
            "GET /metrics with {tracked} ranks tracked (client side, to the last byte): median {m50:.1} ms, max {mmax:.1} ms, {msize} bytes"
        ));
        self.result(format!(
            "/v1/ranks render inside the exporter: median {:.1} ms, {} bytes",
            server["ranks_ms"].as_f64().unwrap_or(f64::NAN),
            server["ranks_bytes"]
        ));
        self.result(format!("GET /v1/ranks with {tracked} ranks tracked (client side): median {r50:.1} ms, max {rmax:.1} ms, {rsize} bytes"));
        self.result(format!(
            "exporter RSS: {:.1} MiB with 1,024 endpoints configured, {:.1} MiB once every rank connected and sent heartbeats, {:.1} MiB with {tracked} ranks busy {busy:.0} s ({} frames): {:.1} KiB per tracked rank (windows 10s,60s)   [target <= 16 KiB]",
            rss0 as f64 / 1048576.0,
            rss_idle as f64 / 1048576.0,
            rss1 as f64 / 1048576.0,
            report.load_sent(),
            (rss1 as f64 - rss0 as f64) / tracked.max(1) as f64 / 1024.0
        ));
        self.result(format!(
            "exporter live heap: {:.1} MiB configured, {:.1} MiB connected, {:.1} MiB busy: {:.1} KiB per tracked rank ({:.1} KiB of it before the first iteration)",
            heap0 / 1048576.0,
            heap_idle / 1048576.0,
            heap1 / 1048576.0,
            (heap1 - heap0) / tracked.max(1) as f64 / 1024.0,
            (heap_idle - heap0) / tracked.max(1) as f64 / 1024.0
        ));
        // Between the live heap and RSS: glibc's chunk overhead (in use minus live heap)
        // and the free chunks it keeps resident.
        let mib = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN) / 1048576.0;
        let per_rank =
            |k: &str| (mib(&malloc1, k) - mib(&malloc0, k)) * 1024.0 / tracked.max(1) as f64;
        self.result(format!(
            "exporter allocator (glibc): in use {:.1} MiB configured, {:.1} MiB busy ({:.1} KiB per tracked rank, {:.1} KiB of it chunk overhead over the live heap); free chunks kept {:.1} MiB configured, {:.1} MiB busy ({:.1} KiB per tracked rank)",
            mib(&malloc0, "in_use"),
            mib(&malloc1, "in_use"),
            per_rank("in_use"),
            per_rank("in_use") - (heap1 - heap0) / tracked.max(1) as f64 / 1024.0,
            mib(&malloc0, "free"),
            mib(&malloc1, "free"),
            per_rank("free")
        ));
        self.result(format!(
            "exporter RSS after the 20 scrapes above: {:.1} MiB = {:.1} KiB per tracked rank",
            rss_scraped as f64 / 1048576.0,
            (rss_scraped as f64 - rss0 as f64) / tracked.max(1) as f64 / 1024.0
        ));
    }
}
