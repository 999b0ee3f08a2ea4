//! Section latency: frame-to-client latency on /v1/stream, next to the bare transport's.

use crate::exporter::Exporter;
use crate::load::{endpoint_base, json_u64, latencies, percentile, Generator};
use crate::Bench;
use fpm_exporter::publisher::loadgen::SendLog;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench<'_> {
    /// The same generator and rate into bare zeromq SUBs (no exporter): the latency the
    /// transport and this machine's scheduling add by themselves.
    pub(crate) async fn transport_latency(&mut self, ranks: u64, rate: f64) {
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
                    let addr = fpm_exporter::address::rank_address(&base2, r).unwrap();
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
    pub(crate) async fn latency(&mut self) {
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
}
