//! The child side of the re-exec protocol: `fpm-bench serve <fpm-exporter flags>` runs
//! the exporter until stdin closes and answers the lines "render", "heap" and "malloc" on stdout.

use crate::alloc::{COUNTING, LIVE_BYTES};
use crate::load::percentile;
use clap::Parser;
use fpm_exporter::config::{Cli, Settings};
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// `fpm-bench serve <fpm-exporter flags>`: the exporter alone, until stdin closes.
pub(crate) fn serve(flags: &[String]) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::new("warn,zeromq=error");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut argv = vec!["fpm-exporter".to_string()];
    argv.extend_from_slice(flags);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::from_cli(&cli.run) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fpm-bench serve: {e}");
            return ExitCode::from(2);
        }
    };
    // FPM_BENCH_COUNT_HEAP=1: count live heap bytes from the start (answers "heap").
    if std::env::var_os("FPM_BENCH_COUNT_HEAP").is_some() {
        COUNTING.store(true, Relaxed);
    }
    let rt = exporter_runtime();
    rt.block_on(async move {
        let running = fpm_exporter::app::start(settings)
            .await
            .expect("exporter starts");
        // The parent closes stdin (or dies): that is the stop signal.
        // A line "render" asks for server-side render timings (one JSON line back).
        let registry = running.registry.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                match line.trim() {
                    "render" => println!("{}", render_timings(&registry)),
                    "heap" => println!("{}", LIVE_BYTES.load(Relaxed)),
                    "malloc" => println!("{}", malloc_stats()),
                    _ => {}
                }
            }
        })
        .await;
        running.stop(Duration::from_millis(500)).await;
    });
    ExitCode::SUCCESS
}

/// glibc's own figures: bytes in allocated chunks and in free chunks it keeps.
fn malloc_stats() -> serde_json::Value {
    match fpm_exporter::alloc::allocator_stats() {
        Some(s) => serde_json::json!({"in_use": s.in_use, "free": s.free}),
        None => serde_json::Value::Null,
    }
}

/// The runtime `serve` and `count` run on: the one `fpm-exporter` builds.
/// FPM_BENCH_RUNTIME=current|N (worker threads) tries another runtime for comparison.
pub(crate) fn exporter_runtime() -> tokio::runtime::Runtime {
    match std::env::var("FPM_BENCH_RUNTIME").ok().as_deref() {
        Some("current") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
        Some(n) if n.parse::<usize>().is_ok() => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.parse().unwrap())
            .enable_all()
            .build()
            .expect("tokio runtime"),
        _ => fpm_exporter::app::runtime().expect("tokio runtime"),
    }
}

/// Ten renders of /metrics and of /v1/ranks inside the exporter, each split into the
/// snapshot and the text: medians in ms, and sizes.
fn render_timings(registry: &fpm_exporter::state::Registry) -> serde_json::Value {
    use fpm_exporter::sink::{prometheus, ranks_document as json};
    use fpm_exporter::state::RankFilter;
    let (mut snap_ms, mut metrics_ms, mut ranks_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut metrics_bytes, mut ranks_bytes) = (0, 0);
    for _ in 0..10 {
        let t = Instant::now();
        let snap = registry.snapshot(&RankFilter::default());
        snap_ms.push(t.elapsed().as_secs_f64() * 1e3);
        drop(snap);
        let t = Instant::now();
        metrics_bytes = prometheus::render(registry, prometheus::text::Format::Text, 0.0).len();
        metrics_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let snap = registry.snapshot(&RankFilter::default());
        ranks_bytes = json::ranks_document(registry, &snap).len();
        ranks_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        percentile(v, 0.5)
    };
    serde_json::json!({
        "ranks": registry.rank_count(),
        "snapshot_ms": med(&mut snap_ms),
        "metrics_ms": med(&mut metrics_ms),
        "metrics_bytes": metrics_bytes,
        "ranks_ms": med(&mut ranks_ms),
        "ranks_bytes": ranks_bytes,
    })
}
