//! `fpm-bench`: runs the exporter and the load generator together and prints the
//! figures of docs/performance.md, each next to its target. Not part of the test
//! suite; every phase is bounded in time and the whole run stops by itself.
//!
//! The exporter runs in a child process (this binary re-executed as `fpm-bench serve
//! <exporter flags>`, which calls `fpm_exporter::app::start` like `fpm-exporter`
//! does), so its CPU time and resident memory are read cleanly from /proc. The load
//! generator, the stream client and the HTTP probes run in this process.

mod alloc;
mod args;
mod exporter;
mod fanin;
mod flood;
mod heap;
mod http;
mod latency;
mod load;
mod loads;
mod multiproc;
mod procfs;
mod python;
mod rates;
mod scrape;
mod serve;
mod soak;
mod throughput;

// The section modules name these as `super::...`.
use args::Args;
pub(crate) use exporter::{Counters, Exporter};
pub(crate) use http::{http_get, http_get_timed};
pub(crate) use load::{endpoint_base, percentile, Generator};
pub(crate) use procfs::proc_cpu_seconds;
pub(crate) use serve::exporter_runtime;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The repository (workspace) root: the Python scripts and the test venv live there,
/// one level above this package's manifest.
pub(crate) const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Every section, in run order.
const SECTIONS: [&str; 14] = [
    "idle",
    "rates",
    "transport",
    "ingest",
    "python",
    "latency",
    "scrape",
    "heap",
    "flood",
    "zero-loss",
    "soak",
    "multiproc",
    "fanin",
    "loads",
];

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("serve") => return serve::serve(&argv[2..]),
        Some("count") => return rates::count(&argv[2..], false),
        Some("native-count") => return rates::count(&argv[2..], true),
        _ => {}
    }
    let args = Args::parse();
    let sections = match args.sections() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fpm-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if args.list {
        println!("{}", sections.join("\n"));
        return ExitCode::SUCCESS;
    }
    let gen_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.gen_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .expect("generator runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bench = Bench {
        args: &args,
        gen: gen_rt.handle().clone(),
        results: Vec::new(),
    };
    let started = Instant::now();
    let results = rt.block_on(bench.run(&sections));
    println!("\n== summary ({:.0} s) ==", started.elapsed().as_secs_f64());
    for line in results {
        println!("{line}");
    }
    gen_rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::SUCCESS
}

/// The run: arguments, the generator's runtime, and the result lines so far.
pub(crate) struct Bench<'a> {
    pub(crate) args: &'a Args,
    pub(crate) gen: tokio::runtime::Handle,
    pub(crate) results: Vec<String>,
}

impl Bench<'_> {
    /// The Python interpreter of the reference sections: `--python`, or the test venv.
    pub(crate) fn python_path(&self) -> PathBuf {
        self.args
            .python
            .clone()
            .unwrap_or_else(|| PathBuf::from(REPO_ROOT).join("target/pyenv/bin/python"))
    }

    async fn run(mut self, sections: &[&str]) -> Vec<String> {
        for s in sections {
            println!("\n== {s} ==");
            match *s {
                "idle" => self.idle().await,
                "rates" => self.rates().await,
                "transport" => self.transport().await,
                "ingest" => self.ingest().await,
                "python" => self.python().await,
                "latency" => self.latency().await,
                "scrape" => self.scrape().await,
                "heap" => self.heap(),
                "flood" => self.flood().await,
                "zero-loss" => self.zero_loss().await,
                "soak" => self.soak().await,
                "multiproc" => self.multiproc().await,
                "fanin" => self.fanin().await,
                "loads" => self.loads().await,
                _ => unreachable!("validated"),
            }
        }
        self.results
    }

    pub(crate) fn result(&mut self, line: String) {
        println!("{line}");
        self.results.push(line);
    }
}
