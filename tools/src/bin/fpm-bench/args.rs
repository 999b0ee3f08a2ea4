//! The command line and the choice of sections.

use super::SECTIONS;
use clap::Parser;
use std::path::PathBuf;

/// Command line of the benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "fpm-bench",
    about = "Benchmark fpm-exporter against its targets (see docs/performance.md)."
)]
pub(crate) struct Args {
    /// Sections to run, comma-separated (idle,rates,transport,ingest,python,latency,scrape,heap,flood,zero-loss,soak,multiproc,fanin,loads) or "all".
    #[arg(long, default_value = "all")]
    pub(crate) only: String,
    /// Rank counts of the ingest runs.
    #[arg(long, default_value = "1,8,64")]
    pub(crate) ranks: String,
    /// Seconds of load in each throughput run.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) seconds: f64,
    /// Requested rate (frames/s, all ranks) of the maximum-throughput runs; above what
    /// one generator thread can send on this machine, so the generator runs flat out.
    #[arg(long, default_value_t = 2_000_000.0)]
    pub(crate) max_rate: f64,
    /// Rate of the zero-loss run with 64 ranks (the target).
    #[arg(long, default_value_t = 250_000.0)]
    pub(crate) target_rate: f64,
    /// Seconds of load in the full-rate soak (256 ranks x 200 frames/s).
    #[arg(long, default_value_t = 30.0)]
    pub(crate) soak_seconds: f64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) idle_seconds: f64,
    /// Seconds of load before the `rates` section starts measuring (warm-up excluded).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rates_warm: f64,
    /// Seconds over which the `rates` section measures each consumer at each rate.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) rates_seconds: f64,
    /// Rank counts of the `rates` section.
    #[arg(long, default_value = "8,64", value_delimiter = ',')]
    pub(crate) rates_ranks: Vec<u64>,
    /// Rates (frames/s, all ranks) of the `rates` section.
    #[arg(long, default_value = "1000,10000,100000", value_delimiter = ',')]
    pub(crate) rates_at: Vec<f64>,
    /// `--receive-delay` of the exporter and of the native receiver in `rates` (default:
    /// the exporter's default), to see what a longer or shorter delay costs.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) receive_delay: Option<std::time::Duration>,
    /// Seconds of silence (every rank connected) over which `rates` measures idle CPU.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) rates_idle: f64,
    /// Seconds of the `flood` section's rogue publisher.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) flood_seconds: f64,
    /// `--rank-detail` of the exporter in `scrape`: `full` by default, the level issue
    /// 13's memory target is stated at (the state kept is the same at both; only the
    /// exposition, and so the render figures, differ).
    #[arg(long, default_value = "full")]
    pub(crate) scrape_detail: String,
    /// Seconds the `scrape` section keeps its 1,024 ranks busy before measuring: 65 by
    /// default, so every sub-window of both default windows is in use (steady state,
    /// where issue 13's memory target is stated).
    #[arg(long, default_value_t = 65.0)]
    pub(crate) scrape_busy: f64,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub(crate) gen_threads: usize,
    /// Python with msgspec and pyzmq (default: target/pyenv/bin/python from scripts/test-deps.sh).
    #[arg(long)]
    pub(crate) python: Option<PathBuf>,
    /// Print the exporter's counters at every poll of the throughput runs.
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Print the sections that would run and exit.
    #[arg(long)]
    pub(crate) list: bool,
}

impl Args {
    pub(crate) fn sections(&self) -> Result<Vec<&'static str>, String> {
        if self.only == "all" {
            return Ok(SECTIONS.to_vec());
        }
        self.only
            .split(',')
            .map(|s| {
                SECTIONS
                    .iter()
                    .find(|&&k| k == s.trim())
                    .copied()
                    .ok_or_else(|| format!("unknown section {s:?}; known: {}", SECTIONS.join(",")))
            })
            .collect()
    }
}
