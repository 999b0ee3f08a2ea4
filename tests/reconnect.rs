//! When the subscriber re-creates its socket, and how often it tries: a long forward
//! pass (silence without heartbeats) makes a rank stale but keeps its connection, and a
//! peer that completes the ZMTP handshake and drops again is retried with backoff.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_forward_pass_is_stale_but_keeps_the_socket_and_the_frame_that_ends_it() {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let exp = Exporter::start(&[
        "--endpoint",
        &endpoint,
        "--engine",
        "busy",
        "--stale-after",
        "1s",
        "--reconnect-after",
        "20s",
    ])
    .await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "w-busy");
    let l = [
        ("engine", "busy"),
        ("worker_id", "w-busy"),
        ("dp_rank", "0"),
    ];
    let e = [("engine", "busy")];
    wait_for("rank up", Duration::from_secs(15), || async {
        (sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0)).then_some(())
    })
    .await;
    let m = exp.metrics().await;
    let connects = sample(&m, "fpm_endpoint_connects_total", &e).unwrap();
    let iterations = sample(&m, "fpm_iterations_total", &l).unwrap();

    // A long forward pass: the real publisher is busy, so it sends no heartbeats.
    d.set_idle(0, false);
    let silent_since = Instant::now();
    wait_for(
        "rank stale during the pass",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_up", &l) == Some(0.0)
                && sample(
                    &m,
                    "fpm_rank_state",
                    &[l[0], l[1], l[2], ("state", "stale")],
                ) == Some(1.0))
            .then_some(())
        },
    )
    .await;
    // Stay silent well past --stale-after (several sweeps and old re-create cycles).
    let silence = Duration::from_millis(3500);
    if let Some(rest) = silence.checked_sub(silent_since.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let m = exp.metrics().await;
    assert_eq!(sample(&m, "fpm_up", &l), Some(0.0), "stale while silent");
    assert_eq!(
        sample(&m, "fpm_endpoint_connects_total", &e),
        Some(connects),
        "a silence shorter than --reconnect-after must not re-create the socket"
    );
    assert_eq!(sample(&m, "fpm_endpoint_connected", &e), Some(1.0));

    // The pass ends: its frame is sent once and must arrive on the same connection.
    d.cmd(json!({"cmd": "publish", "rank": 0, "drain": true,
                 "metrics": {"wall_time": 4.2, "scheduled_requests": {"num_prefill_requests": 1, "sum_prefill_tokens": 100000}}}));
    wait_for(
        "the frame that ends the pass",
        Duration::from_secs(5),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_iterations_total", &l) == Some(iterations + 1.0)
                && sample(&m, "fpm_up", &l) == Some(1.0))
            .then_some(())
        },
    )
    .await;
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_endpoint_connects_total", &e),
        Some(connects)
    );
    assert_eq!(sample(&m, "fpm_missed_frames_total", &l), Some(0.0));
    drop(d);
    exp.stop().await;
}

/// The 64-byte ZMTP 3.0 greeting of a NULL-mechanism peer.
fn zmtp_greeting() -> Vec<u8> {
    let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    g.extend(b"NULL");
    g.resize(64, 0);
    g
}

/// A READY command announcing a PUB socket.
fn zmtp_ready_pub() -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend(b"READY");
    body.push(11);
    body.extend(b"Socket-Type");
    body.extend(3u32.to_be_bytes());
    body.extend(b"PUB");
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend(body);
    frame
}

/// Plays a PUB peer through the whole ZMTP handshake, then resets the connection.
async fn handshake_and_reset(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    s.write_all(&zmtp_greeting()).await?;
    let mut greeting = [0u8; 64];
    s.read_exact(&mut greeting).await?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let mut ready = vec![0u8; head[1] as usize];
    s.read_exact(&mut ready).await?;
    s.write_all(&zmtp_ready_pub()).await?;
    s.set_zero_linger()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_completes_the_handshake_and_drops_is_retried_with_backoff() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acceptor = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handshake_and_reset(s));
            }
        })
    };
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let exp = Exporter::start(&["--endpoint", &endpoint, "--engine", "drop"]).await;
    wait_for("first attempt", Duration::from_secs(5), || async {
        (accepted.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    let first = accepted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = accepted.load(Ordering::Relaxed) - first;
    eprintln!("attempts in 3 s after the first: {n}");
    // Backoff 100 ms doubling to 500 ms gives about 7 attempts in 3 s; a fixed 100 ms
    // retry gives 30, a loop without any pause thousands.
    assert!(n >= 2, "only {n} attempts in 3 s: the subscriber gave up");
    assert!(n <= 12, "{n} attempts in 3 s: no backoff");
    let (status, _) = exp.get("/readyz").await;
    assert_eq!(status, 200);
    acceptor.abort();
    exp.stop().await;
}
