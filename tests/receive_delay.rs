//! `--receive-delay`: frames of every rank are read in rounds up to the delay apart
//! (what keeps CPU per frame low at real rates), yet a burst is read in full without
//! waiting, and a `/v1/stream` client gets frames within the push delay however long
//! the configured one is.

mod common;

use common::{sample, wait_for, Exporter};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(i: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: "w-delay".into(),
        wall_time: Real(0.01),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(4),
            sum_prefill_tokens: Count(i % 256),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn setup(delay: &str) -> (Exporter, FramePublisher) {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut p = FramePublisher::bind(&endpoint).await.unwrap();
    let exp = Exporter::start(&["--endpoint", &endpoint, "--receive-delay", delay]).await;
    // The PUB drops what it sends before the subscription arrives: send until seen.
    let t0 = Instant::now();
    loop {
        p.send(&mut frame(0)).await.unwrap();
        if iterations(&exp.metrics().await) > 0.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "never subscribed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (exp, p)
}

fn iterations(m: &str) -> f64 {
    sample(m, "fpm_iterations_total", &[("dp_rank", "0")]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_larger_than_one_round_is_read_in_full_at_the_default_delay() {
    let (exp, mut p) = setup("50ms").await;
    let before = iterations(&exp.metrics().await);
    // 50,000 frames as fast as the publisher goes (~15 MB, hundreds of rounds' worth):
    // rounds come sooner while a socket fills fast, so nothing overflows its buffer.
    let n = 50_000u64;
    for i in 0..n {
        p.send(&mut frame(i)).await.unwrap();
    }
    let m = wait_for("every frame", Duration::from_secs(30), || async {
        let m = exp.metrics().await;
        (iterations(&m) >= before + n as f64).then_some(m)
    })
    .await;
    // Exact counting is the sequence check: any gap shows as a missed frame.
    assert_eq!(
        sample(&m, "fpm_missed_frames_total", &[("dp_rank", "0")]),
        Some(0.0),
        "no frame lost"
    );
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_at_a_steady_rate_are_read_in_rounds_the_delay_apart() {
    let (exp, mut p) = setup("800ms").await;
    let start_count = iterations(&exp.metrics().await);
    // 40 frames/s for 2.4 s; the counter, sampled every 50 ms, moves in steps of many
    // frames (one round each) rather than frame by frame.
    let sender = tokio::spawn(async move {
        for i in 0..96 {
            p.send(&mut frame(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        p
    });
    let mut steps = Vec::new();
    let mut last = start_count;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2600) {
        let now = iterations(&exp.metrics().await);
        if now > last {
            steps.push(now - last);
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _p = sender.await.unwrap();
    let biggest = steps.iter().cloned().fold(0.0, f64::max);
    assert!(
        biggest >= 10.0,
        "frames arrive in rounds of up to 800 ms (~32 frames): steps {steps:?}"
    );
    assert!(
        steps.len() <= 12,
        "at most one step per round (plus the first frame after idle): {steps:?}"
    );
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_gets_frames_within_the_push_delay() {
    let (exp, mut p) = setup("1s").await;
    let addr = exp.url.strip_prefix("http://").unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /v1/stream?heartbeats=false HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait until the stream is live (its first frame event), then pace frames 25 ms
    // apart and note when each frame event arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for _ in text.matches("event: frame") {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        }
    });
    let t0 = Instant::now();
    loop {
        p.send(&mut frame(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = false;
        while rx.try_recv().is_ok() {
            got = true;
        }
        if got {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "stream never live");
    }
    // Let a pending round pass so the events below are the paced frames only.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rx.try_recv().is_ok() {}
    let mut lateness = Vec::new();
    for i in 0..40 {
        let sent = Instant::now();
        p.send(&mut frame(i)).await.unwrap();
        let arrived = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("frame event")
            .unwrap();
        lateness.push(arrived.saturating_duration_since(sent));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    lateness.sort();
    let p90 = lateness[lateness.len() * 9 / 10];
    // The configured delay is a second; the push delay is a millisecond. A loaded
    // test machine adds scheduling noise, so the bound is generous but far below 1 s.
    assert!(
        p90 < Duration::from_millis(250),
        "p90 {p90:?}, all {lateness:?}"
    );
    reader.abort();
    exp.stop().await;
}
