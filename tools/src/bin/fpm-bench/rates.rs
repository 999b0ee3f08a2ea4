//! fpm-bench's `rates` section: CPU per frame at the rates engines really send
//! (1,000, 10,000 and 100,000 frames/s over 8 and 64 ranks), for four consumers of
//! the same generator, one after the other in one run:
//! - the exporter (`fpm-bench serve`, i.e. `fpm_exporter::app::start`);
//! - the Python reference (`scripts/bench/py_consumer.py`: pyzmq + msgspec + Welford);
//! - a bare `zeromq` crate SUB per rank that only counts (`fpm-bench count`), on the
//!   exporter's runtime: the floor that crate's receive path sets;
//! - the exporter's own ZMTP receiver that only counts (`fpm-bench native-count`): the
//!   floor of the transport the exporter uses.
//!
//! Each consumer is its own process; its CPU is read from /proc over the measured
//! interval only: `--rates-warm` seconds after the load starts (warm-up heartbeats and
//! connection set-up excluded) to `--rates-seconds` later, and its frames over the
//! same interval come from the consumer itself. Idle is measured the same way just
//! before, with every rank connected and silent.

use super::{endpoint_base, http_get, proc_cpu_seconds, Bench, Counters, Generator};
use fpm_exporter::address::rank_address;
use fpm_exporter::publisher::loadgen::Phase;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A receiver handler that only counts messages.
struct Counted(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl fpm_exporter::source::receiver::Handler for Counted {
    fn message(&mut self, _parts: &[&[u8]]) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a consumer cost over one measured interval.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    /// CPU cores (CPU seconds per second) while silent, every rank connected.
    idle_cores: f64,
    /// CPU cores under load.
    load_cores: f64,
    /// Frames it took in per second under load.
    frames_per_sec: f64,
}

impl Cost {
    fn us_per_frame(&self) -> f64 {
        self.load_cores * 1e6 / self.frames_per_sec.max(1e-9)
    }
    fn over_idle_pct(&self) -> f64 {
        (self.load_cores - self.idle_cores) * 100.0
    }
}

/// A consumer process: how to read its frame count.
enum Consumer {
    /// The exporter: counters from /metrics.
    Exporter(super::Exporter),
    /// A child answering `count` on stdin with `{"frames": N}` on stdout.
    Counting {
        child: Child,
        stdin: ChildStdin,
        lines: mpsc::Receiver<String>,
    },
}

impl Consumer {
    fn spawn_counting(mut cmd: Command) -> std::io::Result<Consumer> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Consumer::Counting {
            child,
            stdin,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        match self {
            Consumer::Exporter(e) => e.pid,
            Consumer::Counting { child, .. } => child.id(),
        }
    }

    /// Frames taken in so far (heartbeats included), or None if it does not answer.
    fn frames(&mut self) -> Option<f64> {
        match self {
            Consumer::Exporter(e) => {
                let body = http_get(&e.addr, "/metrics").ok()?.1;
                Some(Counters::parse(&body).frames)
            }
            Consumer::Counting { stdin, lines, .. } => {
                writeln!(stdin, "count").ok()?;
                stdin.flush().ok()?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Ok(line) =
                    lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if let Some(n) = v["frames"].as_f64() {
                        return Some(n);
                    }
                }
                None
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Consumer::Counting { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Bench<'_> {
    pub(crate) async fn rates(&mut self) {
        let root = PathBuf::from(crate::REPO_ROOT);
        let python = self.python_path();
        let script = root.join("scripts/bench/py_consumer.py");
        let mut rows = Vec::new();
        let delay = self
            .args
            .receive_delay
            .map(|d| format!("{}ms", d.as_millis()));
        let (rank_counts, rates) = (self.args.rates_ranks.clone(), self.args.rates_at.clone());
        if let Some(d) = &delay {
            self.result(format!(
                "rates: exporter and native receiver at --receive-delay {d}"
            ));
        }
        for &ranks in &rank_counts {
            for &rate in &rates {
                let base = endpoint_base("tcp", ranks as u16, &format!("rates{ranks}"));
                let addrs: Vec<String> = (0..ranks)
                    .map(|r| rank_address(&base, r).unwrap())
                    .collect();
                let ranks_arg = ranks.to_string();
                let mut exporter_args = vec![
                    "--endpoint",
                    &base,
                    "--ranks",
                    &ranks_arg,
                    "--engine",
                    "bench",
                ];
                if let Some(d) = &delay {
                    exporter_args.extend(["--receive-delay", d]);
                }
                let exporter = super::Exporter::spawn(&exporter_args).await;
                let exp = self
                    .measure(Consumer::Exporter(exporter), &base, ranks, rate)
                    .await;
                let mut bare = Command::new(std::env::current_exe().expect("own path"));
                bare.arg("count").args(&addrs);
                let bare = match Consumer::spawn_counting(bare) {
                    Ok(c) => self.measure(c, &base, ranks, rate).await,
                    Err(_) => None,
                };
                let mut native = Command::new(std::env::current_exe().expect("own path"));
                native.arg("native-count");
                if let Some(d) = &delay {
                    native.arg(format!("--delay={d}"));
                }
                native.args(&addrs);
                let native = match Consumer::spawn_counting(native) {
                    Ok(c) => self.measure(c, &base, ranks, rate).await,
                    Err(_) => None,
                };
                let mut py = Command::new(&python);
                py.arg(&script)
                    .args(["--max-seconds", "120", "--idle-end", "30"]);
                for a in &addrs {
                    py.args(["--endpoint", a]);
                }
                let py = match Consumer::spawn_counting(py) {
                    Ok(c) => self.measure(c, &base, ranks, rate).await,
                    Err(e) => {
                        eprintln!(
                            "fpm-bench: cannot run {} ({e}); run scripts/test-deps.sh",
                            python.display()
                        );
                        None
                    }
                };
                rows.push((ranks, rate, exp, py, bare, native));
            }
        }
        let fmt = |c: Option<Cost>| match c {
            Some(c) => format!(
                "{:>7.0}/s {:>6.2} us/frame {:>6.2}% idle {:>6.2}% over idle",
                c.frames_per_sec,
                c.us_per_frame(),
                c.idle_cores * 100.0,
                c.over_idle_pct()
            ),
            None => "not measured".into(),
        };
        for (ranks, rate, exp, py, bare, native) in rows {
            let (Some(e), p, b, n) = (exp, py, bare, native) else {
                self.result(format!(
                    "rates {ranks} ranks at {rate:.0}/s: exporter not measured"
                ));
                continue;
            };
            let ratio = p.map_or(f64::NAN, |p| p.us_per_frame() / e.us_per_frame());
            let mut targets = vec![format!(
                "python/exporter {ratio:.1}x [target >= 10x: {}]",
                pass(ratio >= 10.0)
            )];
            if rate == 10_000.0 {
                let us = e.us_per_frame();
                targets.push(format!(
                    "{us:.2} us/frame [target <= 3 us: {}]",
                    pass(us <= 3.0)
                ));
            }
            if rate == 1_000.0 {
                let over = e.over_idle_pct();
                targets.push(format!(
                    "{over:.2}% of a core over idle [target <= 0.5%: {}]",
                    pass(over <= 0.5)
                ));
            }
            self.result(format!(
                "rates {ranks:>2} ranks at {rate:>6.0}/s: exporter {} | python {} | bare zeromq SUB {} | native ZMTP SUB {} | {}",
                fmt(Some(e)),
                fmt(p),
                fmt(b),
                fmt(n),
                targets.join("; ")
            ));
        }
    }

    /// Runs one load against a started consumer and measures it (None when it never
    /// saw every rank or stopped answering).
    async fn measure(
        &mut self,
        mut c: Consumer,
        base: &str,
        ranks: u64,
        rate: f64,
    ) -> Option<Cost> {
        let (warm, secs, idle) = (
            self.args.rates_warm,
            self.args.rates_seconds,
            self.args.rates_idle,
        );
        let gen = Generator::start(&self.gen, base, ranks, Some(rate), warm + secs + 2.0, None);
        // Warm-up heartbeats (every 100 ms per rank) until the consumer saw them all.
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            let n = c.frames().unwrap_or(0.0);
            if n >= 2.0 * ranks as f64 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !seen {
            eprintln!("fpm-bench: a consumer did not see every rank in 30 s");
            let _ = gen.finish().await;
            return None;
        }
        let pid = c.pid();
        gen.set(Phase::Quiet);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (i0, t0) = (proc_cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(idle)).await;
        let idle_cores = (proc_cpu_seconds(pid) - i0) / t0.elapsed().as_secs_f64();
        gen.set(Phase::Load);
        tokio::time::sleep(Duration::from_secs_f64(warm)).await;
        // Frames are read outside the CPU interval, so the reading costs it nothing.
        let f0 = c.frames()?;
        let (cpu0, t0) = (proc_cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let (cpu1, span) = (proc_cpu_seconds(pid), t0.elapsed().as_secs_f64());
        let f1 = c.frames()?;
        gen.set(Phase::Hold);
        let _ = gen.finish().await;
        drop(c);
        Some(Cost {
            idle_cores,
            load_cores: (cpu1 - cpu0) / span,
            frames_per_sec: (f1 - f0) / span,
        })
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// `fpm-bench count <endpoint>...`: one bare zeromq SUB per endpoint that only counts
/// messages, on the same runtime as `serve`; answers `count` on stdin until it closes.
/// `fpm-bench native-count` does the same on the exporter's own receive path (the
/// ZMTP client of `fpm_exporter::source::zmtp`, read by the shared receiver thread of
/// `fpm_exporter::source::receiver` at its default delay).
pub(crate) fn count(mut endpoints: &[String], native: bool) -> std::process::ExitCode {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    // `--delay=D` first: the native receiver's delay (default: the exporter's).
    let mut delay = fpm_exporter::source::receiver::DEFAULT_RECEIVE_DELAY;
    if let Some(d) = endpoints.first().and_then(|a| a.strip_prefix("--delay=")) {
        match humantime::parse_duration(d) {
            Ok(d) => delay = d,
            Err(e) => {
                eprintln!("fpm-bench native-count: --delay: {e}");
                return std::process::ExitCode::from(2);
            }
        }
        endpoints = &endpoints[1..];
    }
    let count = Arc::new(AtomicU64::new(0));
    let rt = super::exporter_runtime();
    // The exporter's receiver with its default delay, handing each message to a
    // handler that only counts: what the transport costs the exporter.
    let receiver = native.then(|| {
        use fpm_exporter::source::receiver::{ReceiveSettings, Receiver};
        let settings = ReceiveSettings {
            delay,
            silence_timeout: Duration::from_secs(30),
        };
        Arc::new(Receiver::start(settings, || false).expect("receiver thread"))
    });
    for addr in endpoints {
        let (addr, count) = (addr.clone(), count.clone());
        if let Some(receiver) = &receiver {
            let receiver = receiver.clone();
            rt.spawn(async move {
                use fpm_exporter::source::zmtp::Subscription;
                // The publishers may bind after this starts: retry, bounded.
                let mut handler = Counted(count);
                for _ in 0..600 {
                    let Ok(sub) = Subscription::connect(&addr, Duration::from_secs(1)).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Ok(done) = receiver.add(sub, handler) else {
                        return;
                    };
                    let Ok(ended) = done.await else {
                        return;
                    };
                    handler = ended.handler;
                }
            });
            continue;
        }
        rt.spawn(async move {
            use zeromq::{Socket, SocketRecv};
            let mut sub = zeromq::SubSocket::new();
            if sub.connect(&addr).await.is_err() || sub.subscribe("").await.is_err() {
                eprintln!("fpm-bench count: cannot connect {addr}");
                return;
            }
            while sub.recv().await.is_ok() {
                count.fetch_add(1, Relaxed);
            }
        });
    }
    // The runtime is driven by block_on (a current-thread one runs nothing otherwise);
    // a thread answers the harness and ends it when stdin closes.
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line.trim() == "count" {
                println!("{{\"frames\": {}}}", count.load(Relaxed));
            }
        }
        let _ = done.send(());
    });
    let _ = rt.block_on(finished);
    std::process::ExitCode::SUCCESS
}
