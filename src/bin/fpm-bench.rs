//! `fpm-bench`: runs the exporter and the load generator together and prints the
//! figures of docs/performance.md, each next to its target. Not part of the test
//! suite; every phase is bounded in time and the whole run stops by itself.
//!
//! The exporter runs in a child process (this binary re-executed as `fpm-bench serve
//! <exporter flags>`, which calls `fpm_exporter::app::start` like `fpm-exporter`
//! does), so its CPU time and resident memory are read cleanly from /proc. The load
//! generator, the stream client and the HTTP probes run in this process.

#[path = "bench/fanin.rs"]
mod fanin;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/multiproc.rs"]
mod multiproc;
#[path = "bench/rates.rs"]
mod rates;

use clap::Parser;
use fpm_exporter::config::{Cli, Settings};
use fpm_exporter::loadgen::{self, LoadConfig, LoadReport, Phase, SendLog};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Counts live heap bytes while [`COUNTING`] is on (for the heap-per-rank figure).
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Every section, in run order.
const SECTIONS: [&str; 13] = [
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
];

/// Command line of the benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "fpm-bench",
    about = "Benchmark fpm-exporter against its targets (see docs/performance.md)."
)]
struct Args {
    /// Sections to run, comma-separated (idle,rates,transport,ingest,python,latency,scrape,heap,flood,zero-loss,soak,multiproc,fanin) or "all".
    #[arg(long, default_value = "all")]
    only: String,
    /// Rank counts of the ingest runs.
    #[arg(long, default_value = "1,8,64")]
    ranks: String,
    /// Seconds of load in each throughput run.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Requested rate (frames/s, all ranks) of the maximum-throughput runs; above what
    /// one generator thread can send on this machine, so the generator runs flat out.
    #[arg(long, default_value_t = 2_000_000.0)]
    max_rate: f64,
    /// Rate of the zero-loss run with 64 ranks (the target).
    #[arg(long, default_value_t = 250_000.0)]
    target_rate: f64,
    /// Seconds of load in the full-rate soak (256 ranks x 200 frames/s).
    #[arg(long, default_value_t = 30.0)]
    soak_seconds: f64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    /// Seconds of load before the `rates` section starts measuring (warm-up excluded).
    #[arg(long, default_value_t = 1.0)]
    rates_warm: f64,
    /// Seconds over which the `rates` section measures each consumer at each rate.
    #[arg(long, default_value_t = 5.0)]
    rates_seconds: f64,
    /// Seconds of silence (every rank connected) over which `rates` measures idle CPU.
    #[arg(long, default_value_t = 3.0)]
    rates_idle: f64,
    /// Seconds of the `flood` section's rogue publisher.
    #[arg(long, default_value_t = 10.0)]
    flood_seconds: f64,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    gen_threads: usize,
    /// Python with msgspec and pyzmq (default: target/pyenv/bin/python from scripts/test-deps.sh).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Print the exporter's counters at every poll of the throughput runs.
    #[arg(long)]
    verbose: bool,
    /// Print the sections that would run and exit.
    #[arg(long)]
    list: bool,
}

impl Args {
    fn sections(&self) -> Result<Vec<&'static str>, String> {
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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some("serve") => return serve(&argv[2..]),
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

/// `fpm-bench serve <fpm-exporter flags>`: the exporter alone, until stdin closes.
fn serve(flags: &[String]) -> ExitCode {
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
                    _ => {}
                }
            }
        })
        .await;
        running.stop(Duration::from_millis(500)).await;
    });
    ExitCode::SUCCESS
}

/// The runtime `serve` and `count` run on: the one `fpm-exporter` builds.
/// FPM_BENCH_RUNTIME=current|N (worker threads) tries another runtime for comparison.
fn exporter_runtime() -> tokio::runtime::Runtime {
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
    use fpm_exporter::sink::{json, prometheus};
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

/// A child exporter process.
struct Exporter {
    child: Child,
    pid: u32,
    addr: String,
    perf: Option<Child>,
}

impl Exporter {
    async fn spawn(flags: &[&str]) -> Exporter {
        Self::spawn_env(flags, &[]).await
    }

    async fn spawn_env(flags: &[&str], env: &[(&str, &str)]) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().expect("own path");
        let child = Command::new(exe)
            .arg("serve")
            .args(["--listen", &addr])
            .args(flags)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn exporter");
        let pid = child.id();
        let e = Exporter {
            child,
            pid,
            addr,
            perf: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(&e.addr, "/healthz").is_err() {
            assert!(Instant::now() < deadline, "exporter did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e
    }

    fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid)
    }

    /// Server-side render timings (see [`render_timings`]).
    fn render_timings(&mut self) -> serde_json::Value {
        self.ask("render")
    }

    /// Live heap bytes of an exporter started with FPM_BENCH_COUNT_HEAP.
    fn heap_bytes(&mut self) -> f64 {
        self.ask("heap").as_f64().unwrap_or(f64::NAN)
    }

    /// One command on the serve process's stdin, one JSON line back.
    fn ask(&mut self, command: &str) -> serde_json::Value {
        let (Some(stdin), Some(stdout)) = (self.child.stdin.as_mut(), self.child.stdout.as_mut())
        else {
            return serde_json::Value::Null;
        };
        if writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return serde_json::Value::Null;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        serde_json::from_slice(&line).unwrap_or_default()
    }

    /// Profiling hook: with FPM_BENCH_PERF_DIR=dir set, records the exporter with perf
    /// from now until it stops, into `dir/<tag>.perf.data`.
    fn profile(&mut self, tag: &str) {
        let Ok(dir) = std::env::var("FPM_BENCH_PERF_DIR") else {
            return;
        };
        let out = format!("{dir}/{tag}.perf.data");
        self.perf = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "2000",
                "-g",
                "-p",
                &self.pid.to_string(),
                "-o",
                &out,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    fn counters(&self) -> Counters {
        let body = http_get(&self.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        Counters::parse(&body)
    }

    async fn wait_ranks(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.counters().ranks >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut perf) = self.perf.take() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of a process: the sum of its threads' scheduler run time (ns, from
/// /proc/PID/task/*/schedstat), precise enough for the 0.5%-of-a-core figure where
/// clock ticks are 10 ms; utime + stime in sysconf(CLK_TCK) ticks where schedstat is
/// missing. (Threads that exited drop out of the sum; the consumers here keep theirs.)
fn proc_cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            if let Some(v) = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let (ticks, page) = fpm_exporter::sink::prometheus::exporter::proc_units();
    fpm_exporter::sink::prometheus::exporter::parse_stat(&stat, ticks, page).map_or(0.0, |u| u.0)
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

/// Totals over the per-rank counters of one /metrics scrape.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    frames: f64,
    missed: f64,
    ranks: usize,
}

impl Counters {
    fn parse(body: &str) -> Counters {
        let mut c = Counters::default();
        for line in body.lines() {
            let value = || {
                line.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("fpm_frames_total{") {
                c.frames += value();
                c.ranks += 1;
            } else if line.starts_with("fpm_missed_frames_total{") {
                c.missed += value();
            }
        }
        c
    }
}

/// A blocking HTTP/1.1 GET on loopback: (status, body). Bounded by a 10 s timeout.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// GET timed from connect to the last byte received: (status, body bytes, time).
fn http_get_timed(addr: &str, path: &str) -> std::io::Result<(u16, usize, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::with_capacity(32 << 20);
    s.read_to_end(&mut raw)?;
    let took = t.elapsed();
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((status, raw.len() - head_end, took))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A tcp base port with `n` free ports after it, or an ipc base path.
fn endpoint_base(transport: &str, n: u16, tag: &str) -> String {
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() as f64) * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Outcome of one throughput run.
#[derive(Debug, Default)]
struct Throughput {
    offered: f64,
    sent: u64,
    counted: u64,
    missed: u64,
    rate: f64,
    cpu_cores: f64,
}

impl Throughput {
    fn lost(&self) -> i64 {
        self.sent as i64 - self.counted as i64
    }
}

struct Bench<'a> {
    args: &'a Args,
    gen: tokio::runtime::Handle,
    results: Vec<String>,
}

/// A running load generator and its phase switch.
struct Generator {
    phase: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<Result<LoadReport, String>>,
}

impl Generator {
    fn start(
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
    async fn load_for(&self, seconds: f64) {
        self.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.set(Phase::Load);
        tokio::time::sleep(Duration::from_secs_f64(seconds + 0.5)).await;
        self.set(Phase::Hold);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn set(&self, p: Phase) {
        let _ = self.phase.send(p);
    }

    async fn finish(self) -> LoadReport {
        self.set(Phase::Stop);
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(r))) => r,
            other => panic!("load generator failed: {other:?}"),
        }
    }
}

impl Bench<'_> {
    /// The Python interpreter of the reference sections: `--python`, or the test venv.
    pub(crate) fn python_path(&self) -> PathBuf {
        self.args.python.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        })
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
                _ => unreachable!("validated"),
            }
        }
        self.results
    }

    fn result(&mut self, line: String) {
        println!("{line}");
        self.results.push(line);
    }

    /// Idle service: 8 rank endpoints configured, no publisher running.
    async fn idle(&mut self) {
        let base = endpoint_base("tcp", 8, "idle");
        let exp = Exporter::spawn(&["--endpoint", &base, "--ranks", "8"]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (c0, t0) = (exp.cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(self.args.idle_seconds)).await;
        let pct = (exp.cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
        self.result(format!(
            "idle CPU (8 endpoints, no publishers, {:.0} s): {pct:.2}% of a core   [target < 1%]",
            self.args.idle_seconds
        ));
    }

    /// The transport's ceiling on this machine: the same generator into bare zeromq SUB
    /// sockets that only count messages (no decode, no state).
    async fn transport(&mut self) {
        let ranks = 64u64;
        let base = endpoint_base("tcp", ranks as u16, "transport");
        let gen = Generator::start(
            &self.gen,
            &base,
            ranks,
            Some(self.args.max_rate),
            self.args.seconds,
            None,
        );
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sink_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for r in 0..ranks {
            let addr = fpm_exporter::source::endpoint::rank_address(&base, r).unwrap();
            let (count, stop) = (count.clone(), stop.clone());
            sink_rt.spawn(async move {
                use zeromq::{Socket, SocketRecv};
                let mut sub = zeromq::SubSocket::new();
                if sub.connect(&addr).await.is_err() || sub.subscribe("").await.is_err() {
                    return;
                }
                while !stop.load(Relaxed) {
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
                    {
                        count.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        gen.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c0 = count.load(Relaxed);
        let t0 = Instant::now();
        gen.set(Phase::Load);
        let (mut last, mut last_change) = (c0, t0);
        while t0.elapsed().as_secs_f64() < self.args.seconds + 5.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let c = count.load(Relaxed);
            if c != last {
                (last, last_change) = (c, Instant::now());
            } else if t0.elapsed().as_secs_f64() > self.args.seconds {
                break;
            }
        }
        gen.set(Phase::Hold);
        stop.store(true, Relaxed);
        let report = gen.finish().await;
        // A runtime may not be dropped from async code: hand it to a blocking thread.
        let _ =
            tokio::task::spawn_blocking(move || sink_rt.shutdown_timeout(Duration::from_secs(1)))
                .await;
        let got = last - c0;
        let secs = last_change.duration_since(t0).as_secs_f64().max(1e-9);
        self.result(format!(
            "transport ceiling, 64 ranks tcp (generator -> bare zeromq SUBs counting, no decode): offered {:.0}/s, sent {}, received {} = {:.0} frames/s",
            report.offered_rate(),
            report.load_sent(),
            got,
            got as f64 / secs
        ));
    }

    async fn throughput(&self, transport: &str, ranks: u64, rate: f64) -> Throughput {
        let base = endpoint_base(transport, ranks as u16, &format!("ingest{ranks}"));
        let mut exp = Exporter::spawn(&[
            "--endpoint",
            &base,
            "--ranks",
            &ranks.to_string(),
            "--engine",
            "bench",
        ])
        .await;
        let gen = Generator::start(&self.gen, &base, ranks, Some(rate), self.args.seconds, None);
        if !exp
            .wait_ranks(ranks as usize, Duration::from_secs(30))
            .await
        {
            eprintln!("fpm-bench: not every rank registered in 30 s");
        }
        gen.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c0 = exp.counters();
        exp.profile(&format!("ingest-{transport}-{ranks}"));
        let cpu0 = exp.cpu_seconds();
        let t0 = Instant::now();
        gen.set(Phase::Load);
        let (mut last, mut last_change, mut cpu_at_change) = (c0.frames, t0, cpu0);
        while t0.elapsed().as_secs_f64() < self.args.seconds + 8.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let c = exp.counters();
            if self.args.verbose {
                eprintln!(
                    "  t={:.1}s frames={} missed={}",
                    t0.elapsed().as_secs_f64(),
                    c.frames - c0.frames,
                    c.missed - c0.missed
                );
            }
            if c.frames != last {
                (last, last_change, cpu_at_change) = (c.frames, Instant::now(), exp.cpu_seconds());
            } else if t0.elapsed().as_secs_f64() > self.args.seconds + 0.3 {
                break;
            }
        }
        gen.set(Phase::Hold);
        let c1 = exp.counters();
        let report = gen.finish().await;
        // The last counter change is seen up to one poll (100 ms) after it happened, and
        // the exporter cannot finish before the generator did: the span lies in between.
        let observed = last_change.duration_since(t0).as_secs_f64();
        let gen_span = report
            .ranks
            .iter()
            .map(|r| r.load_seconds)
            .fold(0.0, f64::max);
        let secs = gen_span.max(observed - 0.1).max(1e-9);
        let counted = (c1.frames - c0.frames) as u64;
        Throughput {
            offered: report.offered_rate(),
            sent: report.load_sent(),
            counted,
            missed: (c1.missed - c0.missed) as u64,
            rate: counted as f64 / secs,
            cpu_cores: (cpu_at_change - cpu0) / secs,
        }
    }

    async fn ingest(&mut self) {
        let counts: Vec<u64> = self
            .args
            .ranks
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        for ranks in counts {
            let t = self.throughput("tcp", ranks, self.args.max_rate).await;
            self.result(format!(
                "ingest {ranks:>2} ranks tcp: {:.0} frames/s taken in (offered {:.0}/s; sent {}, counted {}, lost {} = sequence gaps {}); exporter CPU {:.2} cores = {:.1}% of a core per 10k frames/s",
                t.rate, t.offered, t.sent, t.counted, t.lost(), t.missed, t.cpu_cores,
                t.cpu_cores * 100.0 / (t.rate / 10_000.0)
            ));
        }
    }

    async fn zero_loss(&mut self) {
        for transport in ["tcp", "ipc"] {
            let t = self.throughput(transport, 64, self.args.target_rate).await;
            self.result(format!(
                "zero-loss run 64 ranks {transport} at {:.0}/s requested: offered {:.0}/s, sent {}, counted {}, lost {} (sequence gaps {}), {:.0} frames/s taken in   [target: 0 lost at >= 250,000/s]",
                self.args.target_rate, t.offered, t.sent, t.counted, t.lost(), t.missed, t.rate
            ));
        }
    }

    async fn python(&mut self) {
        let python = self.python_path();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/py_consumer.py");
        let mut rates = Vec::new();
        for ranks in [1u64, 64] {
            let base = endpoint_base("tcp", ranks as u16, &format!("py{ranks}"));
            let mut cmd = Command::new(&python);
            cmd.arg(&script)
                .args(["--max-seconds", &format!("{}", self.args.seconds + 40.0)]);
            for r in 0..ranks {
                cmd.args([
                    "--endpoint",
                    &fpm_exporter::source::endpoint::rank_address(&base, r).unwrap(),
                ]);
            }
            let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn() {
                Ok(c) => c,
                Err(e) => {
                    self.result(format!(
                        "python reference: cannot run {} ({e}); run scripts/test-deps.sh",
                        python.display()
                    ));
                    return;
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let gen = Generator::start(
                &self.gen,
                &base,
                ranks,
                Some(self.args.max_rate),
                self.args.seconds,
                None,
            );
            let ready = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
            if !matches!(&ready, Ok(Some(l)) if l.contains("ready")) {
                eprintln!("fpm-bench: python consumer not ready: {ready:?}");
            }
            gen.set(Phase::Quiet);
            tokio::time::sleep(Duration::from_millis(300)).await;
            gen.set(Phase::Load);
            let done =
                tokio::time::timeout(Duration::from_secs_f64(self.args.seconds + 30.0), rx.recv())
                    .await;
            gen.set(Phase::Hold);
            let report = gen.finish().await;
            let _ = child.kill();
            let _ = child.wait();
            let v: serde_json::Value = match done {
                Ok(Some(l)) => serde_json::from_str(&l).unwrap_or_default(),
                _ => serde_json::Value::Null,
            };
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            let frames = v["frames"].as_f64().unwrap_or(0.0);
            let cpu_us = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6 / frames.max(1.0);
            rates.push((ranks, rate, cpu_us));
            self.result(format!(
                "python reference {ranks:>2} ranks tcp (pyzmq + msgspec + WelfordAccumulator x14 + latest table): {rate:.0} frames/s, {cpu_us:.2} us CPU per frame (offered {:.0}/s, sent {}, processed {}, sequence gaps {})",
                report.offered_rate(),
                report.load_sent(),
                v["frames"],
                v["missed"]
            ));
        }
        // The ratio needs the exporter's figures at the same rank counts, same generator.
        for (ranks, py, py_cpu_us) in rates {
            let t = self.throughput("tcp", ranks, self.args.max_rate).await;
            let cpu_us = t.cpu_cores * 1e6 / t.rate.max(1.0);
            self.result(format!(
                "ratio {ranks:>2} ranks, same generator: frames/s exporter {:.0} / python {py:.0} = {:.1}x   [target >= 10x]; CPU per frame python {py_cpu_us:.2} us / exporter {cpu_us:.2} us = {:.1}x",
                t.rate,
                t.rate / py.max(1.0),
                py_cpu_us / cpu_us
            ));
        }
    }

    /// The same generator and rate into bare zeromq SUBs (no exporter): the latency the
    /// transport and this machine's scheduling add by themselves.
    async fn transport_latency(&mut self, ranks: u64, rate: f64) {
        let base = endpoint_base("tcp", ranks as u16, "tlat");
        let epoch = Instant::now();
        let log = SendLog::new(ranks, epoch);
        let gen = Generator::start(
            &self.gen,
            &base,
            ranks,
            Some(rate),
            self.args.seconds,
            Some(log.clone()),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let base2 = base.clone();
        let sink = std::thread::spawn(move || -> Vec<(u64, u64, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use zeromq::{Socket, SocketRecv};
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                for r in 0..ranks {
                    let addr = fpm_exporter::source::endpoint::rank_address(&base2, r).unwrap();
                    let (tx, stop) = (tx.clone(), stop2.clone());
                    tokio::spawn(async move {
                        let mut sub = zeromq::SubSocket::new();
                        if sub.connect(&addr).await.is_err() || sub.subscribe("").await.is_err() {
                            return;
                        }
                        while !stop.load(Relaxed) {
                            if let Ok(Ok(m)) =
                                tokio::time::timeout(Duration::from_millis(100), sub.recv()).await
                            {
                                let at = epoch.elapsed().as_nanos() as u64;
                                let seq = m
                                    .get(1)
                                    .and_then(|f| <[u8; 8]>::try_from(f.as_ref()).ok())
                                    .map(u64::from_be_bytes);
                                if let Some(seq) = seq {
                                    let _ = tx.send((r, seq, at));
                                }
                            }
                        }
                    });
                }
                drop(tx);
                let mut got = Vec::new();
                while let Some(x) = rx.recv().await {
                    got.push(x);
                }
                got
            })
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        gen.load_for(self.args.seconds).await;
        stop.store(true, Relaxed);
        let got = sink.join().unwrap_or_default();
        let _ = gen.finish().await;
        let lat = latencies(&log, &got);
        self.result(format!(
            "transport latency at {rate:.0} frames/s ({ranks} ranks, generator -> bare zeromq SUB, no exporter): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} frames",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len()
        ));
    }

    /// Frame-to-client latency on /v1/stream at 10,000 frames/s (8 ranks x 1,250/s).
    async fn latency(&mut self) {
        self.transport_latency(8, 10_000.0).await;
        let ranks = 8u64;
        let rate = 10_000.0;
        let base = endpoint_base("tcp", ranks as u16, "lat");
        let exp = Exporter::spawn(&["--endpoint", &base, "--ranks", &ranks.to_string()]).await;
        let epoch = Instant::now();
        let log = SendLog::new(ranks, epoch);
        let gen = Generator::start(
            &self.gen,
            &base,
            ranks,
            Some(rate),
            self.args.seconds,
            Some(log.clone()),
        );
        exp.wait_ranks(ranks as usize, Duration::from_secs(30))
            .await;
        // The client: a blocking socket on its own thread, stamping each line on arrival.
        let addr = exp.addr.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let client = std::thread::spawn(move || -> Vec<(u64, u64, u64)> {
            let mut got = Vec::new();
            let Ok(mut s) = TcpStream::connect(&addr) else {
                return got;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = write!(s, "GET /v1/stream?heartbeats=false HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while !stop2.load(Relaxed) {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => continue,
                }
                let at = epoch.elapsed().as_nanos() as u64;
                if let Some(data) = line.strip_prefix("data:") {
                    if let (Some(rank), Some(seq)) = (
                        json_u64(data, "\"dp_rank\":"),
                        json_u64(data, "\"sequence\":"),
                    ) {
                        got.push((rank, seq, at));
                    }
                }
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        gen.load_for(self.args.seconds).await;
        stop.store(true, Relaxed);
        let got = client.join().unwrap_or_default();
        let report = gen.finish().await;
        let lat = latencies(&log, &got);
        if let Ok(path) = std::env::var("FPM_BENCH_DUMP") {
            let lines: String = got
                .iter()
                .filter_map(|&(rank, seq, at)| {
                    log.sent_at(rank as usize, seq)
                        .map(|s| format!("{s} {rank} {seq} {}\n", at.saturating_sub(s)))
                })
                .collect();
            let _ = std::fs::write(path, lines);
        }
        self.result(format!(
            "stream latency at {rate:.0} frames/s ({ranks} ranks, /v1/stream): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms over {} of {} frames sent   [target p99 <= 2 ms]",
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len(),
            report.load_sent()
        ));
    }

    /// 1,024 ranks tracked (ipc, one engine), busy for a few seconds: scrape costs and RSS.
    async fn scrape(&mut self) {
        let ranks = 1024u64;
        let base = endpoint_base("ipc", 0, "scrape");
        let flags = [
            "--endpoint",
            &base,
            "--ranks",
            &ranks.to_string(),
            "--engine",
            "bench",
        ];
        let mut exp = Exporter::spawn_env(&flags, &[("FPM_BENCH_COUNT_HEAP", "1")]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss0 = exp.rss_bytes();
        let heap0 = exp.heap_bytes();
        let busy = 5.0;
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
            "/metrics render inside the exporter with {} ranks: median {:.1} ms ({:.1} ms of it the snapshot), {} bytes   [target <= 20 ms]",
            server["ranks"],
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
        self.result(format!(
            "exporter RSS after the 20 scrapes above: {:.1} MiB = {:.1} KiB per tracked rank",
            rss_scraped as f64 / 1048576.0,
            (rss_scraped as f64 - rss0 as f64) / tracked.max(1) as f64 / 1024.0
        ));
    }

    /// The full-rate soak: 256 ranks in 8 engines of 32, each rank at 200 frames/s
    /// (51,200 frames/s) for `--soak-seconds`, with /metrics scraped every second.
    /// Exact accounting per rank: every load frame sent is accepted (the load frames
    /// are the only iterations), counted as missed (a sequence gap), or lost at the end
    /// (after the last frame the exporter saw, which no gap can show).
    async fn soak(&mut self) {
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

    /// Steady-state heap per rank, in this process: 1,024 ranks fed for 70 simulated
    /// seconds, so every window slot and every sub-histogram of both windows is in use.
    fn heap(&mut self) {
        use fpm_exporter::state::{sequence::SeqEvent, RankCache, Registry, StateConfig};
        let engines = vec![fpm_exporter::state::EngineInfo {
            name: "bench".into(),
            labels: vec![],
        }];
        COUNTING.store(true, Relaxed);
        let before = LIVE_BYTES.load(Relaxed);
        let registry = Registry::new(StateConfig::default(), engines);
        let endpoint: Arc<str> = "ipc:///bench".into();
        let mut models: Vec<_> = (0..1024u64)
            .map(|r| loadgen::FrameModel::new("bench-engine-0", r, 1))
            .collect();
        let mut caches: Vec<RankCache> = (0..1024).map(|_| RankCache::default()).collect();
        let start = Instant::now();
        let mut seqs = vec![0u64; 1024];
        for sec in 0..70u64 {
            let now = registry.at(start + Duration::from_millis(sec * 1000 + 500));
            for _ in 0..4 {
                for (r, model) in models.iter_mut().enumerate() {
                    let m = model.next_iteration().clone();
                    let ev = if seqs[r] == 0 {
                        SeqEvent::First
                    } else {
                        SeqEvent::InOrder
                    };
                    registry.ingest(&mut caches[r], 0, &endpoint, seqs[r], ev, m, &now);
                    seqs[r] += 1;
                }
            }
        }
        let registry_bytes = LIVE_BYTES.load(Relaxed) - before;
        COUNTING.store(false, Relaxed);
        let per_rank = registry_bytes as f64 / 1024.0 / 1024.0;
        drop(registry);
        self.result(format!(
            "heap per tracked rank in steady state (1,024 ranks, windows 10s,60s, 70 s of iterations): {per_rank:.1} KiB   [target <= 16 KiB]"
        ));
    }
}

/// Milliseconds from send to receipt of every received load frame, sorted.
fn latencies(log: &SendLog, got: &[(u64, u64, u64)]) -> Vec<f64> {
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

fn json_u64(s: &str, key: &str) -> Option<u64> {
    let rest = &s[s.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
