//! Scale soak: 256 ranks across 8 engines, each rank publishing at a steady rate from
//! in-process publishers, while /metrics is scraped. Every frame sent must be either
//! accepted or counted as missed (none silently lost), and memory must stay flat
//! after warm-up. The exporter runs as its own process (the
//! real binary), so its memory and CPU are measured apart from the publishers'.
//!
//! The accounting is exact and needs no settling delay: every frame is an iteration,
//! so a rank's `last_sequence` in `/v1/ranks` moves with every frame it accepts, and
//! between two snapshots `frames + missed_frames` grows by exactly as much as
//! `last_sequence`. After the load, each rank sends sentinel frames until the exporter
//! has seen one beyond its last load frame: every load frame then lies inside the
//! range the exporter accounted for, so one dropped at the very end is counted as
//! missed instead of vanishing.
//!
//! The suite runs a reduced rate that a shared 2-core machine sustains in a debug
//! build; the full rate (200 frames/s per rank, 51,200 frames/s) runs in release mode
//! in the benchmark (`cargo run --release -p fpm-tools --bin fpm-bench -- --only soak`), and here
//! as an ignored test: `cargo test --release --test soak -- --ignored --nocapture`.

mod common;
mod soak_support;

use common::sample;
use fpm_exporter::publisher::FramePublisher;
use soak_support::{frame, seen, ExporterProc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENGINES: usize = 8;
const RANKS: usize = 32;

struct Report {
    /// Load frames sent.
    sent: u64,
    /// Frames accepted between the two snapshots (load frames, in-flight warm-up
    /// frames and sentinels alike).
    accepted: u64,
    /// Frames counted as missed between the two snapshots.
    missed: u64,
    /// Sequence numbers the exporter accounted for between the snapshots, which cover
    /// every load frame: equals `accepted + missed` when nothing vanished.
    covered: u64,
    achieved_per_sec: f64,
    rss_warm: f64,
    rss_end: f64,
}

async fn soak(per_rank_hz: u64, duration: Duration) -> Report {
    let dir = common::ipc_dir();
    let cfg = dir.path().join("engines.toml");
    let mut toml = String::new();
    for e in 0..ENGINES {
        toml += &format!(
            "[[engine]]\nname = \"e{e}\"\nendpoint = \"ipc://{}/e{e}\"\nranks = {RANKS}\n",
            dir.path().display()
        );
    }
    std::fs::write(&cfg, toml).unwrap();
    let mut engines: Vec<Vec<FramePublisher>> = Vec::new();
    for e in 0..ENGINES {
        let mut v = Vec::new();
        for r in 0..RANKS {
            v.push(
                FramePublisher::bind(&format!("ipc://{}/e{e}.{r}", dir.path().display()))
                    .await
                    .unwrap(),
            );
        }
        engines.push(v);
    }
    // Short windows, so that every per-rank ring and histogram is allocated early;
    // growth after the warm-up would be a leak.
    let exp = ExporterProc::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--max-ranks",
        "1024",
        "--windows",
        "2s,4s",
    ])
    .await;

    // Warm-up: frames until all 256 ranks are tracked, i.e. every subscription is live.
    // They are iterations like the load (so `last_sequence` follows every frame).
    let t0 = Instant::now();
    let mut warm_i = 0u64;
    loop {
        for (e, pubs) in engines.iter_mut().enumerate() {
            for (r, p) in pubs.iter_mut().enumerate() {
                p.send(&mut frame(e, r, warm_i)).await.unwrap();
            }
        }
        warm_i += 1;
        let m = exp.metrics().await;
        if sample(&m, "fpm_exporter_ranks_tracked", &[]) == Some((ENGINES * RANKS) as f64) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "ranks not all subscribed in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No settling delay: warm-up frames still in flight land inside the accounted range.
    let base = seen(&exp).await;
    assert_eq!(base.len(), ENGINES * RANKS);
    let load_first: Vec<Vec<u64>> = engines
        .iter()
        .map(|pubs| pubs.iter().map(|p| p.next_sequence()).collect())
        .collect();

    // One task per engine; each tick sends one frame to each of its ranks.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = engines
        .into_iter()
        .enumerate()
        .map(|(e, mut pubs)| {
            let (sent, stop) = (sent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_nanos(1_000_000_000 / per_rank_hz));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    for (r, p) in pubs.iter_mut().enumerate() {
                        p.send(&mut frame(e, r, i)).await.unwrap();
                        sent.fetch_add(1, Relaxed);
                    }
                    i += 1;
                }
                pubs
            })
        })
        .collect();
    let start = Instant::now();
    let mut rss_warm = 0.0;
    let mut cpu_warm = (0.0, start);
    let mut rss_trace = Vec::new();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Prometheus-like scrape load; memory is sampled once warm (at 3/5 of the run:
        // RSS settles within ~15 s as allocator arenas and histograms reach their size).
        let _ = exp.metrics().await;
        rss_trace.push(format!(
            "{:.0}s:{:.1}",
            start.elapsed().as_secs_f64(),
            exp.usage().1 / 1048576.0
        ));
        if rss_warm == 0.0 && start.elapsed() >= duration * 3 / 5 {
            (cpu_warm.0, rss_warm) = exp.usage();
            cpu_warm.1 = Instant::now();
        }
    }
    stop.store(true, Relaxed);
    let mut pubs = Vec::new();
    for t in tasks {
        pubs.push(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let sent = sent.load(Relaxed);
    let (cpu_end, _) = exp.usage();
    let cpu_share = (cpu_end - cpu_warm.0) / cpu_warm.1.elapsed().as_secs_f64();
    // Sentinels: each rank sends frames until the exporter has seen one past its last
    // load frame, so that a load frame dropped at the very end shows as a gap.
    let last_load: Vec<Vec<u64>> = pubs
        .iter()
        .map(|v| v.iter().map(|p| p.next_sequence() - 1).collect())
        .collect();
    let mut sentinel_i = 1_000_000u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let now = seen(&exp).await;
        let behind: Vec<(usize, usize)> = (0..ENGINES)
            .flat_map(|e| (0..RANKS).map(move |r| (e, r)))
            .filter(|k| {
                now.get(k)
                    .is_none_or(|s| s.last_sequence <= last_load[k.0][k.1])
            })
            .collect();
        if behind.is_empty() {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "{} ranks saw no sentinel in 60 s",
            behind.len()
        );
        for (e, r) in behind {
            pubs[e][r].send(&mut frame(e, r, sentinel_i)).await.unwrap();
        }
        sentinel_i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, rss_end) = exp.usage();
    for p in pubs.into_iter().flatten() {
        p.close().await;
    }
    drop(exp);
    let (mut accepted, mut missed, mut covered) = (0, 0, 0);
    for e in 0..ENGINES {
        for r in 0..RANKS {
            let (b, n) = (base[&(e, r)], end[&(e, r)]);
            assert_eq!(
                n.frames - b.frames,
                n.iterations - b.iterations,
                "e{e}/{r}: all iterations"
            );
            assert_eq!(n.duplicates, 0, "e{e}/{r}: duplicates");
            assert_eq!(n.restarts, 0, "e{e}/{r}: restarts");
            assert!(
                b.last_sequence < load_first[e][r],
                "e{e}/{r}: the base precedes the load"
            );
            let (a, m, c) = (
                n.frames - b.frames,
                n.missed - b.missed,
                n.last_sequence - b.last_sequence,
            );
            assert_eq!(
                a + m,
                c,
                "e{e}/{r}: frames neither accepted nor counted as missed"
            );
            (accepted, missed, covered) = (accepted + a, missed + m, covered + c);
        }
    }
    let r = Report {
        sent,
        accepted,
        missed,
        covered,
        achieved_per_sec: sent as f64 / elapsed.as_secs_f64(),
        rss_warm,
        rss_end,
    };
    eprintln!(
        "soak: 256 ranks at {per_rank_hz}/s each for {elapsed:.1?}: sent {} ({:.0} frames/s), accounted range {} = accepted {} + missed {} (sentinels included), exporter CPU {:.0}% of a core, exporter RSS warm {:.1} MiB, end {:.1} MiB",
        r.sent,
        r.achieved_per_sec,
        r.covered,
        r.accepted,
        r.missed,
        cpu_share * 100.0,
        r.rss_warm / 1048576.0,
        r.rss_end / 1048576.0
    );
    eprintln!("exporter RSS (MiB) over time: {}", rss_trace.join(" "));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_256_ranks_reduced_rate_loses_nothing_and_memory_is_flat() {
    let r = soak(10, Duration::from_secs(28)).await;
    assert!(r.sent > 0);
    // Every load frame lies in the accounted range (checked per rank in `soak`).
    assert!(
        r.covered >= r.sent,
        "{} load frames, {} accounted",
        r.sent,
        r.covered
    );
    // 2,560 frames/s is far below capacity even in a debug build, but the publishers
    // share this test's runtime and the machine's cores: a publisher starved long
    // enough can drop a frame, which the exporter then counts. Losing more than 1 in
    // 1,000 would mean the exporter does not keep up.
    assert!(
        r.missed * 1000 <= r.sent,
        "{} of {} frames missed at {:.0} frames/s",
        r.missed,
        r.sent,
        r.achieved_per_sec
    );
    assert!(
        r.rss_end - r.rss_warm < 8.0 * 1048576.0,
        "RSS grew from {} to {}",
        r.rss_warm,
        r.rss_end
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "full-rate soak: 51,200 frames/s for 60 s; run with --release (fpm-bench --only soak runs it too)"]
async fn soak_256_ranks_full_rate() {
    let r = soak(200, Duration::from_secs(60)).await;
    assert!(
        r.covered >= r.sent,
        "{} load frames, {} accounted",
        r.sent,
        r.covered
    );
    assert!(
        r.rss_end - r.rss_warm < 16.0 * 1048576.0,
        "RSS grew from {} to {}",
        r.rss_warm,
        r.rss_end
    );
}
