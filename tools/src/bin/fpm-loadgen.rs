//! `fpm-loadgen`: publishes byte-exact FPM frames on N ranks (tcp or ipc), at a target
//! rate or flat out, for load-testing fpm-exporter or any other FPM consumer.
//!
//! It heartbeats during `--warmup` (so consumers connect past the slow-joiner loss),
//! publishes for `--duration`, keeps its sockets open for `--hold` so queued frames
//! drain, then prints one JSON report (frames sent per rank, with the sequence number
//! of each rank's first load frame) and exits.

use clap::Parser;
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
use std::process::ExitCode;
use std::time::Duration;

/// Command line of the load generator.
#[derive(Debug, Parser)]
#[command(
    name = "fpm-loadgen",
    about = "Publish byte-exact FPM frames on N ranks for load tests."
)]
struct Args {
    /// Base endpoint: rank r binds tcp://HOST:PORT+r or ipc:///PATH.r.
    #[arg(long, default_value = "tcp://127.0.0.1:25380")]
    endpoint: String,
    /// Number of ranks (one PUB socket each).
    #[arg(long, default_value_t = 8)]
    ranks: u64,
    /// Total frames per second over all ranks; 0 = flat out.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// How long to publish load.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Heartbeats before the load, so consumers can connect.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Sockets stay open this long after the load, so queued frames drain.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The worker_id every rank carries.
    #[arg(long, default_value = "loadgen-0")]
    worker_id: String,
    /// Seed of the field variation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.ranks == 0 || !(args.rate >= 0.0 && args.rate.is_finite()) {
        eprintln!("fpm-loadgen: --ranks must be at least 1 and --rate a non-negative number");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fpm-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    let config = LoadConfig {
        endpoint: args.endpoint.clone(),
        ranks: args.ranks,
        worker_id: args.worker_id.clone(),
        rate: (args.rate > 0.0).then_some(args.rate),
        duration: args.duration,
        seed: args.seed,
    };
    runtime.block_on(async move {
        let (phase, rx) = tokio::sync::watch::channel(Phase::Warmup);
        let task = tokio::spawn(loadgen::run(config, rx, None));
        tokio::time::sleep(args.warmup).await;
        let _ = phase.send(Phase::Load);
        tokio::time::sleep(args.duration).await;
        let _ = phase.send(Phase::Hold);
        tokio::time::sleep(args.hold).await;
        let _ = phase.send(Phase::Stop);
        match task.await {
            Ok(Ok(report)) => {
                let summary = serde_json::json!({
                    "sent": report.load_sent(),
                    "offered_rate": report.offered_rate(),
                    "ranks": report.ranks,
                });
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                eprintln!("fpm-loadgen: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("fpm-loadgen: {e}");
                ExitCode::from(1)
            }
        }
    })
}
