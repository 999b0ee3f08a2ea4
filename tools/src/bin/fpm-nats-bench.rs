//! `fpm-nats-bench`: frames per second end to end through NATS (load generator -> edge
//! exporter over ZMQ -> `--nats-publish` -> nats-server -> central exporter `--nats`)
//! next to direct ZMQ ingest (load generator -> exporter) in the same run, the
//! ingesting exporter's CPU per frame for both, at several rank counts, and from those
//! measurements what one central exporter needs for `--target-ranks` x `--target-rate`.
//! Needs `nats-server` on PATH (Debian's package). Every phase is bounded in time.
//!
//! The exporters are child processes (this binary re-executed as `fpm-nats-bench serve
//! <fpm-exporter flags>`, which calls `fpm_exporter::app::start` like `fpm-exporter`
//! does), so their CPU time is read cleanly from /proc and the tool needs no other
//! binary; the load generator runs in this process.

use clap::Parser;
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase};
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
    for _ in 0..100 {
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

struct Run {
    path: &'static str,
    ranks: u64,
    offered: f64,
    delivered: f64,
    cpu_us_per_frame: f64,
    scrape: Duration,
    /// Where the NATS path lost frames: relay drops at the edge, gaps at the centre.
    lost: Option<(f64, f64)>,
}

/// One run: generator -> `ingest` exporter, directly or through `edge`.
async fn run(
    path: &'static str,
    ranks: u64,
    args: &Args,
    nats_url: &str,
    dir: &std::path::Path,
) -> Run {
    let endpoint = format!("ipc://{}/{path}-{ranks}", dir.display());
    let zmq = [
        format!("--endpoint={endpoint}"),
        format!("--ranks={ranks}"),
        "--engine=bench".into(),
    ];
    let (ingest, edge, counter) = if path == "zmq" {
        (exporter(&zmq), None, "fpm_frames_total")
    } else {
        let central = exporter(&[format!("--nats={nats_url}")]);
        let mut edge_args = zmq.to_vec();
        edge_args.extend([
            format!("--nats-publish={nats_url}"),
            "--nats-kv-bucket=".into(),
        ]);
        (
            central,
            Some(exporter(&edge_args)),
            "fpm_nats_ingested_frames_total",
        )
    };
    let (tx, rx) = tokio::sync::watch::channel(Phase::Warmup);
    let gen = tokio::spawn(loadgen::run(
        LoadConfig {
            endpoint,
            ranks,
            worker_id: format!("bench-{path}"),
            rate: Some(args.rate * ranks as f64),
            duration: args.duration,
            seed: 1,
        },
        rx,
        None,
    ));
    // Warm up until the ingesting exporter sees every rank.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (m, _) = metrics(&ingest.url).await;
        if series_count(&m, "fpm_up") as u64 >= ranks || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tx.send(Phase::Quiet).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_m = metrics(&ingest.url).await.0;
    let before = total(&before_m, counter);
    let lost_before = match &edge {
        Some(e) => (
            total(
                &metrics(&e.url).await.0,
                "fpm_nats_relay_dropped_frames_total",
            ),
            total(&before_m, "fpm_nats_missed_messages_total"),
        ),
        None => (0.0, 0.0),
    };
    let cpu0 = cpu_seconds(ingest.child.id());
    tx.send(Phase::Load).unwrap();
    tokio::time::sleep(args.duration).await;
    tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds(ingest.child.id()) - cpu0;
    let (m, scrape) = metrics(&ingest.url).await;
    let delivered = total(&m, counter) - before;
    let lost = match &edge {
        Some(e) => {
            let em = metrics(&e.url).await.0;
            Some((
                total(&em, "fpm_nats_relay_dropped_frames_total") - lost_before.0,
                total(&m, "fpm_nats_missed_messages_total") - lost_before.1,
            ))
        }
        None => None,
    };
    tx.send(Phase::Stop).unwrap();
    let report = gen.await.unwrap().unwrap();
    Run {
        path,
        ranks,
        offered: report.load_sent() as f64 / args.duration.as_secs_f64(),
        delivered: delivered / args.duration.as_secs_f64(),
        // CPU over the load and the hold (the generator sends nothing else then); the
        // scrape is taken after the CPU reading.
        cpu_us_per_frame: cpu / delivered.max(1.0) * 1e6,
        scrape,
        lost,
    }
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
                let one = run(path, r, &args, &nats_url, &dir).await;
                eprintln!("done: {path} {r} ranks");
                runs.push(one);
            }
        }
        let _ = nats.kill();
        let _ = nats.wait();
        let _ = std::fs::remove_dir_all(&dir);
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
