//! 256 `/v1/stream?interval=100ms` clients must not starve ingest: the exporter runs as
//! its own process (its runtime shared by nobody else), frames arrive at a steady rate,
//! and the frames accepted with the snapshot clients are compared with those without.

mod common;

use common::{sample, wait_for};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The exporter binary, killed on drop.
struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn total(url: &str, name: &str) -> f64 {
    let m = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    m.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn frame(rank: u64, i: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: format!("w-{rank}"),
        wall_time: Real(0.01),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(8),
            sum_prefill_tokens: Count(i % 512),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What one paced run saw.
#[derive(Debug)]
struct Run {
    sent: u64,
    /// Accepted in the end (stragglers waited for up to 5 s).
    accepted: f64,
    /// From the last frame sent until every frame was accepted.
    catch_up: Duration,
}

/// Sends `per_sec` frames a second for `secs`, spread over `ranks` identities.
async fn paced(url: &str, p: &mut FramePublisher, ranks: u64, per_sec: u64, secs: u64) -> Run {
    let before = total(url, "fpm_frames_total").await;
    let n = per_sec * secs;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0;
    while sent < n {
        tick.tick().await;
        // Catch up on ticks the test's own runtime was late for: the rate is the promise.
        let due = ((start.elapsed().as_secs_f64() * per_sec as f64) as u64).min(n);
        while sent < due {
            p.send(&mut frame(sent % ranks, sent)).await.unwrap();
            sent += 1;
        }
    }
    let done = Instant::now();
    let want = before + n as f64;
    let deadline = done + Duration::from_secs(5);
    let mut now = total(url, "fpm_frames_total").await;
    while now < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = total(url, "fpm_frames_total").await;
    }
    Run {
        sent: n,
        accepted: now - before,
        catch_up: done.elapsed(),
    }
}

/// A stream client that reads everything; counts the bytes, and whether a snapshot
/// event came at all (counting every event would cost the test more than the exporter).
async fn snapshot_client(
    addr: String,
    bytes: Arc<AtomicU64>,
    saw: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
) {
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let req = "GET /v1/stream?interval=100ms HTTP/1.1\r\nHost: x\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 256 << 10];
    let mut first = true;
    while stop.load(Ordering::Relaxed) == 0 {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if first && String::from_utf8_lossy(&buf[..n]).contains("event: snapshot") {
                    saw.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_clients_do_not_starve_ingest() {
    let port = common::free_port_range(2);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let http = format!("127.0.0.1:{}", port + 1);
    let mut p = FramePublisher::bind(&endpoint).await.unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
        .args([
            "--endpoint",
            &endpoint,
            "--listen",
            &http,
            "--stale-after",
            "30s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exp = Proc(child, format!("http://{http}"));
    let url = exp.1.clone();
    let ranks = 4;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        p.send(&mut frame(0, 0)).await.unwrap();
        if let Ok(r) = reqwest::get(format!("{url}/metrics")).await {
            let m = r.text().await.unwrap_or_default();
            if sample(&m, "fpm_exporter_ranks_tracked", &[]) == Some(1.0) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = 8000;
    let secs = 3;
    let alone = paced(&url, &mut p, ranks, rate, secs).await;

    // The clients run on a runtime of their own, so that the publisher and the probe
    // are not queued behind 256 readers in this test's runtime.
    let bytes = Arc::new(AtomicU64::new(0));
    let saw = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let clients = {
        let (bytes, saw, stop, http) = (bytes.clone(), saw.clone(), stop.clone(), http.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tasks: Vec<_> = (0..256)
                    .map(|_| {
                        tokio::spawn(snapshot_client(
                            http.clone(),
                            bytes.clone(),
                            saw.clone(),
                            stop.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
    };
    wait_for("256 stream clients", Duration::from_secs(10), || async {
        (total(&url, "fpm_exporter_stream_clients").await >= 256.0).then_some(())
    })
    .await;
    let b0 = bytes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let busy = paced(&url, &mut p, ranks, rate, secs).await;
    let mb_per_s = (bytes.load(Ordering::Relaxed) - b0) as f64 / t0.elapsed().as_secs_f64() / 1e6;
    stop.store(1, Ordering::Relaxed);
    clients.join().unwrap();
    let skipped = total(&url, "fpm_exporter_stream_snapshots_skipped_total").await;
    eprintln!("alone: {alone:?}\nwith 256 snapshot clients: {busy:?}");
    eprintln!(
        "snapshot clients received {mb_per_s:.1} MB/s; {skipped} snapshots skipped by the budget"
    );
    assert_eq!(
        alone.accepted, alone.sent as f64,
        "frames lost without stream clients"
    );
    assert_eq!(
        busy.accepted, busy.sent as f64,
        "frames lost with 256 snapshot clients"
    );
    assert_eq!(
        saw.load(Ordering::Relaxed),
        256,
        "every client received snapshot events"
    );
    assert!(
        // Measured 35 ms here (0.93 s when snapshots ran on the async workers and
        // every sampling client woke for every frame); includes a /metrics round trip.
        busy.catch_up < Duration::from_millis(500),
        "ingest lagged {:?} behind the publisher with 256 snapshot clients",
        busy.catch_up
    );
    p.close().await;
}
