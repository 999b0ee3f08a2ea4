//! Faults on the publisher side: an engine restart (with the real SGLang publisher),
//! a publisher that freezes without closing, and a peer that accepts TCP but never
//! speaks ZMTP. Each is noticed, counted and recovered from within bounded time.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use fpm_exporter::publish::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn busy_json(i: u64) -> serde_json::Value {
    json!({
        "wall_time": 0.02,
        "scheduled_requests": {"num_decode_requests": 8, "sum_prefill_tokens": i}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_publisher_restart_after_a_long_absence_is_counted_and_flows_within_2s() {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let exp = Exporter::start(&["--endpoint", &endpoint, "--engine", "sgl"]).await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "w-restart");
    let l = [
        ("engine", "sgl"),
        ("worker_id", "w-restart"),
        ("dp_rank", "0"),
    ];
    wait_for("rank up", Duration::from_secs(15), || async {
        (sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0)).then_some(())
    })
    .await;
    // Move the sequence well past the restart floor so that a restart is a real fall-back.
    d.cmd(json!({"cmd": "publish", "rank": 0, "metrics": busy_json(1), "count": 100, "backpressure": true, "drain": true}));
    wait_for("100 iterations", Duration::from_secs(10), || async {
        (sample(&exp.metrics().await, "fpm_iterations_total", &l) == Some(100.0)).then_some(())
    })
    .await;

    // The engine goes away for 9 s: long enough for zeromq's own reconnect backoff
    // (doubling from 100 ms) to reach several seconds between attempts.
    d.stop(0);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_up", &l),
        Some(0.0),
        "the silent rank is stale"
    );
    assert_eq!(
        sample(&m, "fpm_endpoint_connected", &[("engine", "sgl")]),
        Some(0.0)
    );
    let iterations_before = sample(&m, "fpm_iterations_total", &l).unwrap();

    // It comes back (sequence from 0 again) and publishes every 50 ms.
    d.start(0, &endpoint, "w-restart");
    let back = Instant::now();
    d.set_idle(0, false);
    let mut i = 0;
    let recovered = loop {
        d.cmd(json!({"cmd": "publish", "rank": 0, "metrics": busy_json(i), "drain": true}));
        i += 1;
        let m = exp.metrics().await;
        if sample(&m, "fpm_iterations_total", &l).unwrap() > iterations_before {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no data 5 s after the publisher came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        recovered < Duration::from_secs(2),
        "data flowed again only after {recovered:?}"
    );
    let m = exp.metrics().await;
    assert_eq!(sample(&m, "fpm_publisher_restarts_total", &l), Some(1.0));
    assert_eq!(
        sample(&m, "fpm_missed_frames_total", &l),
        Some(0.0),
        "a restart is not a gap"
    );
    assert_eq!(
        sample(&m, "fpm_exporter_ranks_tracked", &[]),
        Some(1.0),
        "not a new rank"
    );
    assert_eq!(sample(&m, "fpm_up", &l), Some(1.0));
    eprintln!("data flowed again {recovered:?} after the publisher came back");
    drop(d);
    exp.stop().await;
}

fn heartbeat(worker_id: &str) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_publisher_goes_stale_and_is_reconnected() {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut p = FramePublisher::bind(&endpoint).await.unwrap();
    let exp = Exporter::start(&[
        "--endpoint",
        &endpoint,
        "--engine",
        "f",
        "--stale-after",
        "1s",
        "--reconnect-after",
        "1500ms",
    ])
    .await;
    let l = [("engine", "f"), ("worker_id", "frozen")];
    let e = [("engine", "f")];
    for _ in 0..200 {
        p.send(&mut heartbeat("frozen")).await.unwrap();
        if sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = exp.metrics().await;
    assert_eq!(sample(&m, "fpm_up", &l), Some(1.0));
    let connects = sample(&m, "fpm_endpoint_connects_total", &e).unwrap();

    // The publisher keeps its socket open and simply stops sending (no FIN).
    let frozen_at = Instant::now();
    wait_for("rank stale", Duration::from_secs(3), || async {
        (sample(&exp.metrics().await, "fpm_up", &l) == Some(0.0)).then_some(())
    })
    .await;
    let stale_after = frozen_at.elapsed();
    assert!(
        stale_after >= Duration::from_millis(900),
        "stale too early: {stale_after:?}"
    );
    // The subscriber re-creates its socket after the silence and connects again.
    wait_for("socket re-created", Duration::from_secs(5), || async {
        let n = sample(&exp.metrics().await, "fpm_endpoint_connects_total", &e).unwrap();
        (n >= connects + 2.0).then_some(())
    })
    .await;
    // The publisher thaws: frames flow again on the re-created socket.
    let thawed = Instant::now();
    loop {
        p.send(&mut heartbeat("frozen")).await.unwrap();
        if sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0) {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(3),
            "no recovery after thaw"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = exp.metrics().await;
    assert_eq!(sample(&m, "fpm_missed_frames_total", &l), Some(0.0));
    assert_eq!(sample(&m, "fpm_exporter_ranks_tracked", &[]), Some(1.0));
    p.close().await;
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_peer_is_retried_and_a_real_publisher_taking_over_is_picked_up() {
    // A TCP listener that accepts and then says nothing: the ZMTP greeting never comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let exp = Exporter::start(&["--endpoint", &endpoint, "--engine", "h"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = accepted.load(Ordering::Relaxed);
    assert!(
        n >= 3,
        "only {n} connection attempts in 5 s: stuck on one half-open connection"
    );
    assert!(
        n <= 40,
        "{n} connection attempts in 5 s: retrying too eagerly"
    );
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_endpoint_connected", &[("engine", "h")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "fpm_endpoint_connects_total", &[("engine", "h")]),
        Some(0.0)
    );
    let (status, body) = exp.get("/readyz").await;
    assert_eq!(
        status, 200,
        "readiness does not depend on publishers: {body}"
    );

    // The squatter leaves; a real publisher binds the port and is picked up quickly.
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
    let mut p = FramePublisher::bind(&endpoint).await.unwrap();
    let bound = Instant::now();
    let l = [("engine", "h"), ("worker_id", "late")];
    loop {
        let mut f = heartbeat("late");
        f.wall_time = Real(0.01);
        f.scheduled_requests = ScheduledRequests {
            num_decode_requests: Count(1),
            ..Default::default()
        };
        p.send(&mut f).await.unwrap();
        if sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0) {
            break;
        }
        assert!(
            bound.elapsed() < Duration::from_secs(3),
            "publisher not picked up within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.close().await;
    exp.stop().await;
}
