//! Sections idle, transport, ingest and zero-loss: CPU at rest, the transport's ceiling,
//! and frames per second taken in at given rank counts.

use crate::exporter::Exporter;
use crate::load::{endpoint_base, Generator, Throughput};
use crate::Bench;
use fpm_exporter::publisher::loadgen::Phase;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench<'_> {
    /// Idle service: 8 rank endpoints configured, no publisher running.
    pub(crate) async fn idle(&mut self) {
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
    pub(crate) async fn transport(&mut self) {
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
            let addr = fpm_exporter::address::rank_address(&base, r).unwrap();
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

    pub(crate) async fn throughput(&self, transport: &str, ranks: u64, rate: f64) -> Throughput {
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

    pub(crate) async fn ingest(&mut self) {
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

    pub(crate) async fn zero_loss(&mut self) {
        for transport in ["tcp", "ipc"] {
            let t = self.throughput(transport, 64, self.args.target_rate).await;
            self.result(format!(
                "zero-loss run 64 ranks {transport} at {:.0}/s requested: offered {:.0}/s, sent {}, counted {}, lost {} (sequence gaps {}), {:.0} frames/s taken in   [target: 0 lost at >= 250,000/s]",
                self.args.target_rate, t.offered, t.sent, t.counted, t.lost(), t.missed, t.rate
            ));
        }
    }
}
