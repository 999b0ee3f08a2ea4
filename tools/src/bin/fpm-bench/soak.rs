//! Section soak: the full-rate soak with exact per-rank accounting.

use crate::exporter::Exporter;
use crate::http::http_get;
use crate::load::Generator;
use crate::Bench;
use fpm_exporter::publisher::loadgen::{Phase, SendLog};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench<'_> {
    /// The full-rate soak: 256 ranks in 8 engines of 32, each rank at 200 frames/s
    /// (51,200 frames/s) for `--soak-seconds`, with /metrics scraped every second.
    /// Exact accounting per rank: every load frame sent is accepted (the load frames
    /// are the only iterations), counted as missed (a sequence gap), or lost at the end
    /// (after the last frame the exporter saw, which no gap can show).
    pub(crate) async fn soak(&mut self) {
        const ENGINES: usize = 8;
        const RANKS: u64 = 32;
        let dir = std::env::temp_dir().join(format!("fpm-bench-soak-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut config = String::new();
        for e in 0..ENGINES {
            config += &format!(
                "[[engine]]\nname = \"soak{e}\"\nendpoint = \"ipc://{}/s{e}\"\nranks = {RANKS}\n",
                dir.display()
            );
        }
        let cfg = dir.join("engines.toml");
        std::fs::write(&cfg, config).expect("write soak config");
        let exp = Exporter::spawn(&["--config", cfg.to_str().unwrap(), "--windows", "2s,4s"]).await;
        let epoch = Instant::now();
        let logs: Vec<Arc<SendLog>> = (0..ENGINES).map(|_| SendLog::new(RANKS, epoch)).collect();
        let gens: Vec<Generator> = (0..ENGINES)
            .map(|e| {
                let base = format!("ipc://{}/s{e}", dir.display());
                let rate = Some(200.0 * RANKS as f64);
                Generator::start(
                    &self.gen,
                    &base,
                    RANKS,
                    rate,
                    self.args.soak_seconds,
                    Some(logs[e].clone()),
                )
            })
            .collect();
        let all = ENGINES * RANKS as usize;
        if !exp.wait_ranks(all, Duration::from_secs(60)).await {
            eprintln!("fpm-bench: not every soak rank registered in 60 s");
        }
        gens.iter().for_each(|g| g.set(Phase::Quiet));
        let base = soak_counts(&exp.addr);
        let (cpu0, t0) = (exp.cpu_seconds(), Instant::now());
        gens.iter().for_each(|g| g.set(Phase::Load));
        let mut rss = Vec::new();
        let finished = |logs: &[Arc<SendLog>]| -> Option<Vec<Vec<usize>>> {
            logs.iter()
                .map(|l| (0..RANKS as usize).map(|r| l.finished(r)).collect())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.soak_seconds + 30.0);
        let sent = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = exp.counters(); // a scrape, as Prometheus would
            rss.push((
                t0.elapsed().as_secs_f64(),
                exp.rss_bytes() as f64 / 1048576.0,
            ));
            if let Some(sent) = finished(&logs) {
                break sent;
            }
            if Instant::now() > deadline {
                self.result("soak: the generator did not finish its load in time".into());
                return;
            }
        };
        let cpu = (exp.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
        gens.iter().for_each(|g| g.set(Phase::Hold));
        // Until every load frame is accepted or counted, or nothing moves for 3 s.
        let accounted = |now: &std::collections::HashMap<(usize, u64), (u64, u64)>| -> u64 {
            now.iter()
                .map(|(k, &(it, missed))| {
                    let b = base.get(k).map_or(0, |b| b.1);
                    it + missed.saturating_sub(b)
                })
                .sum()
        };
        let total_sent: u64 = sent.iter().flatten().map(|&n| n as u64).sum();
        let (mut now, mut last, mut still) = (soak_counts(&exp.addr), 0, Instant::now());
        while accounted(&now) < total_sent && still.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            now = soak_counts(&exp.addr);
            if accounted(&now) != last {
                (last, still) = (accounted(&now), Instant::now());
            }
        }
        let rss_end = exp.rss_bytes() as f64 / 1048576.0;
        let (mut offered, mut reported) = (0.0, 0);
        for g in gens {
            let r = g.finish().await;
            offered += r.offered_rate();
            reported += r.load_sent();
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Per rank: sent = accepted + missed + lost at the end, with nothing counted
        // twice (a rank over-counted cannot hide behind another rank's tail).
        let (mut accepted, mut missed, mut tail, mut over) = (0, 0, 0, 0);
        for (e, log) in sent.iter().enumerate() {
            for (r, &n) in log.iter().enumerate() {
                let k = (e, r as u64);
                let (it, m) = now.get(&k).copied().unwrap_or_default();
                let m = m.saturating_sub(base.get(&k).map_or(0, |b| b.1));
                let (n, done) = (n as u64, it + m);
                (accepted, missed) = (accepted + it, missed + m);
                tail += n.saturating_sub(done);
                over += done.saturating_sub(n);
            }
        }
        // RSS settles within ~15 s (allocator arenas, histograms): sample it at 3/5.
        let warm_at = self.args.soak_seconds * 0.6;
        let rss_warm = rss
            .iter()
            .find(|(t, _)| *t >= warm_at)
            .map_or(f64::NAN, |r| r.1);
        self.result(format!(
            "soak 256 ranks (8 engines x 32) at 200/s each for {:.0} s: sent {total_sent} (offered {offered:.0} frames/s), accepted {accepted}, missed {missed} (sequence gaps), lost at the end {tail}; accounting exact: {}; exporter CPU {:.0}% of a core; RSS {rss_warm:.1} MiB at {warm_at:.0} s, {rss_end:.1} MiB at the end (growth {:.1} MiB)   [target: 0 lost, RSS growth < 16 MiB]",
            self.args.soak_seconds,
            reported == total_sent && over == 0 && now.len() == all,
            cpu * 100.0,
            rss_end - rss_warm
        ));
        let trace: Vec<String> = rss.iter().map(|(t, m)| format!("{t:.0}s:{m:.1}")).collect();
        println!("soak RSS (MiB) over time: {}", trace.join(" "));
    }
}

/// Per (engine index, dp_rank) of the soak's engines `soak<N>`: (iterations, missed
/// frames), from one /v1/ranks snapshot.
fn soak_counts(addr: &str) -> std::collections::HashMap<(usize, u64), (u64, u64)> {
    let body = http_get(addr, "/v1/ranks").map(|r| r.1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for r in v["ranks"].as_array().into_iter().flatten() {
        let engine = r["engine"].as_str().and_then(|e| e.strip_prefix("soak"));
        let (Some(e), Some(rank)) = (engine.and_then(|e| e.parse().ok()), r["dp_rank"].as_u64())
        else {
            continue;
        };
        let c = &r["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        out.insert((e, rank), (n("iterations"), n("missed_frames")));
    }
    out
}
