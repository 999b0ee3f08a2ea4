//! `fpm-nats-bench`: frames per second end to end through NATS (load generator -> edge
//! exporter over ZMQ -> `--nats-publish` -> nats-server -> central exporter `--nats`)
//! next to direct ZMQ ingest (load generator -> exporter) in the same run, the
//! ingesting exporter's CPU per frame for both, at several rank counts, and from those
//! measurements what one central exporter needs for `--target-ranks` x `--target-rate`.
//! On the NATS path two central exporters ingest side by side: one serving every rank
//! (`--nats-relayed-series central`, the old default, which the throughput figures
//! are of) and one at the default (`edge`: relayed ranks are the edges' to serve), and
//! their `/metrics` scrapes (bytes, series, time) are reported next to each other.
//! Needs `nats-server` on PATH (Debian's package). Every phase is bounded in time.
//!
//! The exporters are child processes (this binary re-executed as `fpm-nats-bench serve
//! <fpm-exporter flags>`, which calls `fpm_exporter::app::start` like `fpm-exporter`
//! does), so their CPU time is read cleanly from /proc and the tool needs no other
//! binary; the load generator runs in this process.
//!
//! `--fleet NODESxRANKS` (e.g. `1250x8`) measures the central's `/metrics` over that many
//! relayed ranks at both `--nats-relayed-series` settings ([`fleet`]).

mod fleet;
mod paths;

use paths::{run, Scrape};

use clap::Parser;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "fpm-nats-bench",
    about = "Throughput and CPU of NATS ingest next to ZMQ ingest."
)]
struct Args {
    /// Rank counts to measure (the scaling runs).
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    ranks: Vec<u64>,
    /// Paths to measure: `zmq` (direct), `nats` (edge -> NATS -> central).
    #[arg(long, value_delimiter = ',', default_value = "zmq,nats")]
    paths: Vec<String>,
    /// Also measure the central's scrape over NODESxRANKS relayed ranks (e.g. 1250x8).
    #[arg(long, value_name = "NODESxRANKS")]
    fleet: Option<String>,
    /// Frames per second per rank offered by the generator.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Load duration of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Ranks of the fleet to size for.
    #[arg(long, default_value_t = 10_000)]
    target_ranks: u64,
    /// Frames per second per rank of the fleet to size for.
    #[arg(long, default_value_t = 50.0)]
    target_rate: f64,
}

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn exporter(args: &[String]) -> Proc {
    let exe: PathBuf = std::env::current_exe().unwrap();
    let port = free_port();
    let child = Command::new(exe)
        .arg("serve")
        .args(args)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--max-ranks",
            "65536",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-execute fpm-nats-bench as the exporter");
    Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn get_blocking(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let hostport = url.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {hostport}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") || head.contains("chunked") {
        return None;
    }
    // HTTP/1.0: the body is not chunked, so sample lines arrive whole.
    Some(body.to_owned())
}

async fn metrics(url: &str) -> (String, Duration) {
    // Up to a minute: an exporter of 10,000 ranks is a while starting.
    for _ in 0..600 {
        let u = url.to_owned();
        let t = Instant::now();
        let got = tokio::task::spawn_blocking(move || get_blocking(&u))
            .await
            .unwrap();
        if let Some(body) = got {
            return (body, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no /metrics at {url}");
}

/// Sum of every sample of `name` (any labels).
fn total(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn series_count(body: &str, name: &str) -> usize {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .count()
}

/// `fpm-nats-bench serve <fpm-exporter flags>`: the exporter alone, until stdin closes
/// (the parent's `Proc` is dropped, or the parent dies: no exporter outlives a run).
fn serve(flags: &[String]) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
        .with_writer(std::io::stderr)
        .init();
    let argv = std::iter::once("fpm-exporter".to_string()).chain(flags.iter().cloned());
    let settings = match fpm_exporter::config::Cli::try_parse_from(argv)
        .map_err(|e| e.to_string())
        .and_then(|cli| {
            fpm_exporter::config::Settings::from_cli(&cli.run).map_err(|e| e.to_string())
        }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fpm-nats-bench serve: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = fpm_exporter::app::runtime().expect("tokio runtime");
    rt.block_on(async move {
        let running = match fpm_exporter::app::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fpm-nats-bench serve: cannot listen: {e}");
                return ExitCode::from(1);
            }
        };
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
        running.stop(Duration::from_millis(500)).await;
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("serve") {
        return serve(&argv[2..]);
    }
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile_dir();
        let port = free_port();
        let mut nats = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        let nats_url = format!("nats://127.0.0.1:{port}");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut runs = Vec::new();
        for &r in &args.ranks {
            for path in ["zmq", "nats"] {
                if !args.paths.iter().any(|p| p == path) {
                    continue;
                }
                let one = run(path, r, &args, &nats_url, &dir).await;
                eprintln!("done: {path} {r} ranks");
                runs.push(one);
            }
        }
        let fleet_run = match &args.fleet {
            Some(spec) => {
                let (n, r) = spec
                    .split_once('x')
                    .and_then(|(n, r)| Some((n.parse().ok()?, r.parse().ok()?)))
                    .expect("--fleet NODESxRANKS, e.g. 1250x8");
                let one = fleet::run(n, r, args.rate, args.duration, &nats_url).await;
                eprintln!("done: fleet {n}x{r}");
                Some(one)
            }
            None => None,
        };
        let _ = nats.kill();
        let _ = nats.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let show = |s: &Scrape| {
            let size = if s.bytes >= 1_000_000 {
                format!("{:.1} MB", s.bytes as f64 / 1e6)
            } else {
                format!("{:.1} kB", s.bytes as f64 / 1e3)
            };
            format!(
                "{size}, {} series, {:.0} ms",
                s.series,
                s.time.as_secs_f64() * 1e3
            )
        };
        if !runs.is_empty() {
            println!("| path | ranks | offered frames/s | ingested frames/s | ingesting exporter CPU µs/frame | /metrics scrape | NATS path frames lost over the run (edge relay drops / gaps at centre) |");
            println!("|---|---|---|---|---|---|---|");
            for r in &runs {
                let label = if r.path == "zmq" { "ZMQ direct" } else { "edge -> NATS -> central" };
                let lost = r.lost.map_or("-".to_owned(), |(d, g)| format!("{d:.0} / {g:.0}"));
                println!(
                    "| {label} | {} | {:.0} | {:.0} | {:.2} | {:.0} ms | {lost} |",
                    r.ranks, r.offered, r.delivered, r.cpu_us_per_frame, r.scrape.as_secs_f64() * 1e3
                );
            }
            println!();
            println!("| ranks (all relayed by an edge) | central /metrics, every rank (`--nats-relayed-series central`) | central /metrics at the default (`edge`) |");
            println!("|---|---|---|");
            for r in runs.iter().filter(|r| r.scrapes.len() == 2) {
                println!("| {} | {} | {} |", r.ranks, show(&r.scrapes[0]), show(&r.scrapes[1]));
            }
        }
        if let Some(f) = &fleet_run {
            println!();
            println!("| relayed ranks (nodes x ranks), frames published | central /metrics, every rank (`--nats-relayed-series central`) | central /metrics at the default (`edge`) |");
            println!("|---|---|---|");
            println!(
                "| {} ({} x {}), {} | {} ({:.0} ranks tracked) | {} ({:.0} ranks tracked) |",
                f.nodes * f.per_node,
                f.nodes,
                f.per_node,
                f.offered,
                show(&f.scrapes[0]),
                f.tracked[0],
                show(&f.scrapes[1]),
                f.tracked[1]
            );
        }
        // Sizing from the largest NATS run: CPU per frame there, and the scrape cost
        // per rank (rendering is linear in ranks).
        if let Some(big) = runs.iter().filter(|r| r.path == "nats").max_by_key(|r| r.ranks) {
            let fps = args.target_ranks as f64 * args.target_rate;
            let cores = fps * big.cpu_us_per_frame / 1e6;
            let scrape = big.scrape.as_secs_f64() * args.target_ranks as f64 / big.ranks as f64;
            println!();
            println!(
                "sizing: {} ranks x {} frames/s = {:.0} frames/s -> {:.2} cores of ingest at {:.2} µs/frame (measured at {} ranks), plus ~{:.1} s of CPU per /metrics scrape ({:.0} ms at {} ranks, linear in ranks); measured delivery at {} ranks: {:.0} of {:.0} offered frames/s",
                args.target_ranks, args.target_rate, fps, cores, big.cpu_us_per_frame, big.ranks,
                scrape, big.scrape.as_secs_f64() * 1e3, big.ranks, big.ranks, big.delivered, big.offered
            );
        }
    });
    ExitCode::SUCCESS
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("fpm-nats-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
