//! The exporter's ZMTP receiver against hostile and broken peers, played byte by byte
//! by a raw TCP listener: each bad peer is a counted error and a reconnect, never a
//! crash, a hang or a big allocation, and the real publisher that answers next is
//! read normally.

mod common;

use common::{sample, wait_for, Exporter};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn greeting(mechanism: &[u8]) -> Vec<u8> {
    let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    g.extend(mechanism);
    g.resize(64, 0);
    g
}

fn ready(socket_type: &[u8]) -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend(b"READY");
    body.push(11);
    body.extend(b"Socket-Type");
    body.extend((socket_type.len() as u32).to_be_bytes());
    body.extend(socket_type);
    let mut frame = vec![0x04, body.len() as u8];
    frame.extend(body);
    frame
}

fn frame(more: bool, body: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::from(more) | 0x02];
    f.extend((body.len() as u64).to_be_bytes());
    f.extend(body);
    f
}

/// Plays a PUB through the handshake and checks what the SUB said.
async fn handshake(s: &mut TcpStream, socket_type: &[u8]) -> std::io::Result<()> {
    s.write_all(&greeting(b"NULL")).await?;
    let mut peer = [0u8; 64];
    s.read_exact(&mut peer).await?;
    assert_eq!(
        (peer[0], peer[9], peer[10]),
        (0xFF, 0x7F, 3),
        "SUB greeting"
    );
    assert_eq!(&peer[12..16], b"NULL");
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let mut body = vec![0u8; head[1] as usize];
    s.read_exact(&mut body).await?;
    assert_eq!(head[0], 0x04, "READY is a command");
    assert!(
        body.ends_with(b"\x00\x00\x00\x03SUB"),
        "SUB announces itself"
    );
    s.write_all(&ready(socket_type)).await?;
    Ok(())
}

/// One bad peer per connection attempt, then a good one.
async fn play(listener: tokio::net::TcpListener) {
    let (mut s, _) = listener.accept().await.unwrap();
    // Garbage instead of a greeting (an HTTP server on the port).
    let mut junk = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
    junk.resize(64, b' ');
    let _ = s.write_all(&junk).await;
    let (mut s, _) = listener.accept().await.unwrap();
    let _ = s.write_all(&greeting(b"CURVE")).await;
    let (mut s, _) = listener.accept().await.unwrap();
    let _ = handshake(&mut s, b"REP").await;
    // A frame announcing 2^64-1 bytes: refused before anything is allocated.
    let (mut s, _) = listener.accept().await.unwrap();
    if handshake(&mut s, b"PUB").await.is_ok() {
        let mut sub = [0u8; 3];
        let _ = s.read_exact(&mut sub).await;
        let mut f = vec![0x02];
        f.extend(u64::MAX.to_be_bytes());
        let _ = s.write_all(&f).await;
    }
    // Closing in the middle of a frame.
    let (mut s, _) = listener.accept().await.unwrap();
    if handshake(&mut s, b"PUB").await.is_ok() {
        let mut f = vec![0x02];
        f.extend(100u64.to_be_bytes());
        f.extend([0u8; 10]);
        let _ = s.write_all(&f).await;
    }
    drop(s);
    // Silent after accepting: the handshake times out.
    let (silent, _) = listener.accept().await.unwrap();
    // A good publisher, which sends a PING command first (TTL 0, context "hb"): the
    // SUB owes it a PONG with the same context.
    let (mut s, _) = listener.accept().await.unwrap();
    drop(silent);
    handshake(&mut s, b"PUB").await.unwrap();
    let mut sub = [0u8; 3];
    s.read_exact(&mut sub).await.unwrap();
    assert_eq!(
        sub,
        [0x00, 0x01, 0x01],
        "subscription to everything, ZMTP 3.0 form"
    );
    let mut wire = vec![0x04, 9];
    wire.extend(b"\x04PING\x00\x00hb");
    let payload = common::golden_payload("v1_decode");
    for seq in 1..=3u64 {
        wire.extend(frame(true, b""));
        wire.extend(frame(true, &seq.to_be_bytes()));
        wire.extend(frame(false, &payload));
    }
    s.write_all(&wire).await.unwrap();
    let mut pong = [0u8; 9];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"\x04\x07\x04PONGhb", "PONG echoes the context");
    // Held open until the test ends.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_counted_and_retried_and_a_good_one_is_read_after() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let peer = tokio::spawn(play(listener));
    let exp = Exporter::start(&["--endpoint", &endpoint, "--engine", "zmtp"]).await;
    let l = [("engine", "zmtp")];
    let frames = wait_for(
        "the good publisher's frames",
        Duration::from_secs(20),
        || async {
            let m = exp.metrics().await;
            sample(&m, "fpm_frames_total", &l).filter(|&n| n >= 3.0)
        },
    )
    .await;
    assert_eq!(frames, 3.0);
    let m = exp.metrics().await;
    let errors: f64 = m
        .lines()
        .filter(|l| l.starts_with("fpm_endpoint_receive_errors_total{") && l.contains("zmtp"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    // Garbage greeting, CURVE, REP, the oversized frame, the close mid-frame.
    assert_eq!(errors, 5.0, "{m}");
    // Of those, the handshake's: CURVE (security); the garbage greeting and REP.
    for (reason, n) in [("security", 1.0), ("protocol", 2.0), ("denied", 0.0)] {
        let l = [("engine", "zmtp"), ("reason", reason)];
        let got = sample(&m, "fpm_endpoint_handshake_failures_total", &l);
        assert_eq!(got, Some(n), "{reason}");
    }
    let (status, _) = exp.get("/readyz").await;
    assert_eq!(status, 200);
    peer.abort();
    exp.stop().await;
}
