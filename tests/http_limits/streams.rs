//! Stream clients under abuse: hundreds, then a clear 503; stalled or vanished ones
//! neither slow ingestion nor leak, and lag is reported to the client.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_stream_clients_then_a_clear_503_and_cleanup() {
    let dir = common::ipc_dir();
    let addr = format!("ipc://{}/s", dir.path().display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    let running = start(&["--endpoint", &addr, "--max-streams", "200"], |_| {}).await;
    let base = format!("http://{}", running.addr);
    until_subscribed(&base, &mut p).await;
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let r = client
            .get(format!("{base}/v1/stream?heartbeats=false"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r.bytes_stream());
    }
    let r = client
        .get(format!("{base}/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("too many stream clients"));
    assert_eq!(
        metric(&base, "fpm_exporter_stream_clients", &[]).await,
        200.0
    );

    // Every one of the 200 receives the frame. It goes out once, so first make sure
    // the silence while they connected did not leave the socket being re-created.
    until_subscribed(&base, &mut p).await;
    p.send(&mut busy(42)).await.unwrap();
    let got = futures::future::join_all(streams.iter_mut().map(|s| async {
        let mut text = String::new();
        while !text.contains("\"sum_prefill_tokens\":42") {
            match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
                Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        text.contains("event: frame")
    }))
    .await;
    assert!(
        got.iter().all(|&g| g),
        "{} of 200 clients got the frame",
        got.iter().filter(|&&g| g).count()
    );

    // They vanish, half of them in the middle of reading events.
    for (i, s) in streams.iter_mut().enumerate() {
        if i % 2 == 0 {
            p.send(&mut busy(i as u64)).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(5), s.next()).await;
        }
    }
    drop(streams);
    // Frames keep flowing so the server notices the closed connections on its next write.
    clients_drain_to_zero(&base, &mut p).await;
    // Room again: a new client is accepted.
    let r = client
        .get(format!("{base}/v1/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    p.close().await;
    running.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_clients_do_not_slow_ingestion_and_are_told_of_lag() {
    let dir = common::ipc_dir();
    let addr = format!("ipc://{}/l", dir.path().display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    // A small event ring so that a stalled client overruns it within the test.
    let running = start(&["--endpoint", &addr], |s| s.state.stream_buffer = 256).await;
    let base = format!("http://{}", running.addr);
    until_subscribed(&base, &mut p).await;

    let rate = 400;
    let n = 1200; // 3 s at 400 frames/s
    let alone = publish_paced(&base, &mut p, n, rate).await;
    assert_eq!(alone, n as f64);

    // 50 clients send the request and then read nothing.
    let rss_before = rss_bytes();
    let stalled: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(running.addr).unwrap();
            s.set_nodelay(true).unwrap();
            write!(s, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    wait_for(
        "stalled clients connected",
        Duration::from_secs(30),
        || async {
            (metric(&base, "fpm_exporter_stream_clients", &[]).await == 50.0).then_some(())
        },
    )
    .await;
    // They stay stalled for 10 s of steady ingest (on a subscription known to be live:
    // the socket may have been re-created while they connected).
    until_subscribed(&base, &mut p).await;
    let n_stalled = 4000;
    let with_stalled = publish_paced(&base, &mut p, n_stalled, rate).await;
    assert_eq!(
        with_stalled, n_stalled as f64,
        "every frame still ingested with 50 stalled clients"
    );
    let m = get(&format!("{base}/metrics")).await.1;
    assert_eq!(
        sample(&m, "fpm_missed_frames_total", &[("worker_id", "w")]),
        Some(0.0)
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {grown} bytes with 50 stalled clients"
    );

    // A burst of large events (8 KiB worker_ids, echoed in each frame event) overruns
    // the socket buffers and the event ring of every stalled client.
    let mut big = busy(0);
    big.worker_id = "b".repeat(8 << 10);
    for _ in 0..3000 {
        p.send(&mut big).await.unwrap();
    }
    // One of them starts reading: it is told how many events it missed.
    let mut reader = stalled[0].try_clone().unwrap();
    let lag = tokio::task::spawn_blocking(move || {
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            let s = String::from_utf8_lossy(&text);
            if let Some(i) = s.find("event: lagged\ndata: ") {
                let rest = &s[i + 20..];
                if let Some(end) = rest.find('\n') {
                    return Some(rest[..end].to_owned());
                }
            }
        }
        None
    });
    // Keep frames flowing while it drains its socket buffer down to the lag point.
    let lag = loop {
        p.send(&mut busy(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        if lag.is_finished() {
            break lag.await.unwrap();
        }
    };
    let lag = lag.expect("an `event: lagged` reached the client");
    let v: serde_json::Value = serde_json::from_str(&lag).unwrap();
    assert!(v["missed"].as_u64().unwrap() > 0, "{lag}");

    drop(stalled);
    clients_drain_to_zero(&base, &mut p).await;
    p.close().await;
    running.stop(Duration::from_secs(1)).await;
}
