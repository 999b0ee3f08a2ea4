//! Faults on the publisher side: an engine restart (with the real SGLang publisher),
//! a publisher that freezes without closing, and a peer that accepts TCP but never
//! speaks ZMTP. Each is noticed, counted and recovered from within bounded time.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a publisher that (re)appears may take to be read again: about 1.5 s by the
/// subscriber's retry policy (a 500 ms pause at most, a 1 s connect timeout), plus
/// room for process scheduling on a loaded 2-core machine.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

fn busy_json(i: u64) -> serde_json::Value {
    json!({
        "wall_time": 0.02,
        "scheduled_requests": {"num_decode_requests": 8, "sum_prefill_tokens": i}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_publisher_restart_after_a_long_absence_is_counted_and_flows_again_promptly() {
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
            back.elapsed() < RECOVERY_LIMIT,
            "no data {RECOVERY_LIMIT:?} after the publisher came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The promise: the subscriber's next attempt comes within its longest retry pause
    // (500 ms) and a connect attempt is abandoned after 1 s, so data flows again about
    // 1.5 s after the publisher binds at worst; the bound adds room for a loaded machine.
    assert!(
        recovered < RECOVERY_LIMIT,
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let last_sent = loop {
        let sent_at = Instant::now();
        p.send(&mut heartbeat("frozen")).await.unwrap();
        if sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0) {
            break sent_at;
        }
        assert!(Instant::now() < deadline, "rank never up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let m = exp.metrics().await;
    let connects = sample(&m, "fpm_endpoint_connects_total", &e).unwrap();

    // The publisher keeps its socket open and simply stops sending (no FIN). Its last
    // frame arrived no earlier than it was sent, so stale can come no sooner than
    // --stale-after after `last_sent`, however loaded the machine.
    wait_for("rank stale", Duration::from_secs(15), || async {
        (sample(&exp.metrics().await, "fpm_up", &l) == Some(0.0)).then_some(())
    })
    .await;
    let silent_for = last_sent.elapsed();
    assert!(
        silent_for >= Duration::from_secs(1),
        "stale after only {silent_for:?} of silence"
    );
    // The subscriber re-creates its silent socket and connects again.
    wait_for("socket re-created", Duration::from_secs(30), || async {
        let n = sample(&exp.metrics().await, "fpm_endpoint_connects_total", &e).unwrap();
        (n > connects).then_some(())
    })
    .await;
    let before = exp.metrics().await;
    let counter = |m: &str, name: &str| sample(m, name, &l).unwrap();
    // The publisher thaws, sending until the rank is up again. The socket may be in the
    // middle of another re-creation (a frame sent then meets no subscriber): every
    // frame sent is then either accepted or counted as missed, none vanishes.
    let thawed = Instant::now();
    let mut thaw_sent = 0.0;
    loop {
        p.send(&mut heartbeat("frozen")).await.unwrap();
        thaw_sent += 1.0;
        if sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0) {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(30),
            "no recovery 30 s after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "up again {:?} after the thaw, {thaw_sent} frames sent",
        thawed.elapsed()
    );
    let m = wait_for(
        "every thaw frame accounted for",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            let accounted = counter(&m, "fpm_frames_total") - counter(&before, "fpm_frames_total")
                + counter(&m, "fpm_missed_frames_total")
                - counter(&before, "fpm_missed_frames_total");
            let restarted = counter(&m, "fpm_publisher_restarts_total")
                > counter(&before, "fpm_publisher_restarts_total");
            (accounted >= thaw_sent || restarted).then_some(m)
        },
    )
    .await;
    let accepted = counter(&m, "fpm_frames_total") - counter(&before, "fpm_frames_total");
    let missed =
        counter(&m, "fpm_missed_frames_total") - counter(&before, "fpm_missed_frames_total");
    // A frame after a re-created socket continues the sequence, so the frames it skipped
    // are a gap; should the exporter judge a new connection a restart instead, the
    // restart is counted and the skipped frames with it.
    let restarted = counter(&m, "fpm_publisher_restarts_total")
        - counter(&before, "fpm_publisher_restarts_total");
    if restarted == 0.0 {
        assert_eq!(
            accepted + missed,
            thaw_sent,
            "thaw frames: {accepted} accepted + {missed} missed"
        );
    } else {
        assert!(accepted + missed <= thaw_sent && accepted >= 1.0);
    }
    assert_eq!(
        counter(&before, "fpm_missed_frames_total"),
        0.0,
        "the freeze itself is no loss"
    );
    assert_eq!(sample(&m, "fpm_duplicate_frames_total", &l), Some(0.0));
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
    let started = Instant::now();
    let exp = Exporter::start(&["--endpoint", &endpoint, "--engine", "h"]).await;
    // Never stuck on one half-open connection: attempts keep coming.
    let n = wait_for("3 connection attempts", Duration::from_secs(30), || async {
        let n = accepted.load(Ordering::Relaxed);
        (n >= 3).then_some(n)
    })
    .await;
    // Nor a tight loop: each attempt waits out its 1 s connect timeout, so there are at
    // most about one per second (a loaded machine only makes them fewer).
    let secs = started.elapsed().as_secs_f64();
    assert!(
        n as f64 <= 2.0 * secs + 2.0,
        "{n} connection attempts in {secs:.1} s: retrying too eagerly"
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
            bound.elapsed() < RECOVERY_LIMIT,
            "publisher not picked up within {RECOVERY_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.close().await;
    exp.stop().await;
}
