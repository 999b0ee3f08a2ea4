//! The load generator puts the captured stream on the wire frame for frame, and the
//! benchmark's loss accounting (sent by the generator vs counted by the exporter)
//! holds at a rate the exporter easily keeps up with.

mod common;

use bytes::Bytes;
use common::{golden_payload as golden, ipc_dir, sample, wait_for, Exporter};
use fpm_exporter::publisher::loadgen::{self, LoadConfig, Phase, SendLog};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::decode::decode_payload;
use std::time::Duration;
use zeromq::{Socket, SocketRecv, SubSocket};

/// Replays the captured stream of publisher '694d98a3c5e3b1f2' (sequences 0..=4)
/// through the generator's publisher and compares all three frames on the wire.
#[tokio::test]
async fn publisher_puts_the_captured_stream_on_the_wire() {
    let dir = ipc_dir();
    let address = format!("ipc://{}/golden.0", dir.path().display());
    let mut publisher = FramePublisher::bind(&address).await.unwrap();
    let mut sub = SubSocket::new();
    tokio::time::timeout(Duration::from_secs(5), sub.connect(&address))
        .await
        .unwrap()
        .unwrap();
    sub.subscribe("").await.unwrap();
    let stream = [
        "v1_heartbeat",
        "v1_prefill",
        "v1_decode",
        "v1_mixed",
        "v1_large",
    ];
    let first = Bytes::from(golden(stream[0]));
    // Probe with copies of the first frame (send_raw does not advance the sequence)
    // until the subscription is live, so the replay below is not lost to the slow joiner.
    let mut live = false;
    for _ in 0..100 {
        publisher.send_raw(0, first.clone()).await.unwrap();
        if tokio::time::timeout(Duration::from_millis(50), sub.recv())
            .await
            .is_ok()
        {
            live = true;
            break;
        }
    }
    assert!(live, "subscription never became live");
    for name in stream {
        let bytes = golden(name);
        let mut metrics = decode_payload(&bytes).unwrap();
        metrics.counter_id = 999; // the publisher stamps the real one
        let seq = publisher.send(&mut metrics).await.unwrap();
        // Skip probe copies still in flight (sequence 0, identical to the first frame).
        let frames = loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .unwrap()
                .unwrap();
            let frames = msg.into_vec();
            if !(seq > 0 && frames[1].as_ref() == 0u64.to_be_bytes()) {
                break frames;
            }
        };
        assert_eq!(frames.len(), 3, "{name}");
        assert!(frames[0].is_empty(), "{name}: topic");
        assert_eq!(
            frames[1].as_ref(),
            seq.to_be_bytes(),
            "{name}: sequence frame"
        );
        assert_eq!(frames[2].as_ref(), bytes.as_slice(), "{name}: payload");
    }
    publisher.close().await;
}

/// Below capacity, every frame the generator sends is counted by the exporter:
/// sent == iterations counted (warm-up frames are heartbeats, load frames iterations),
/// fpm_frames_total == heartbeats + iterations, and no sequence gaps. This is the
/// accounting the benchmark's "frames lost" figure relies on. Every wait is on the
/// condition itself: the generator's own log says when each rank's load is over and
/// how many frames it sent, and the exporter is polled until it has counted them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_counts_every_generated_frame_below_capacity() {
    let dir = ipc_dir();
    let base = format!("ipc://{}/lg", dir.path().display());
    let exporter = Exporter::start(&["--endpoint", &base, "--ranks", "2", "--engine", "lg"]).await;
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Warmup);
    let config = LoadConfig {
        endpoint: base.clone(),
        ranks: 2,
        worker_id: "loadgen-test".into(),
        rate: Some(4000.0),
        duration: Duration::from_millis(500),
        seed: 7,
    };
    let log = SendLog::new(2, std::time::Instant::now());
    let gen = tokio::spawn(loadgen::run(config, phase_rx, Some(log.clone())));
    let per_rank = |m: &str, name: &str, r: usize| -> f64 {
        sample(m, name, &[("dp_rank", &r.to_string())]).unwrap_or(0.0)
    };
    wait_for("both ranks registered", Duration::from_secs(30), || async {
        let m = exporter.metrics().await;
        let seen = (0..2)
            .all(|r| sample(&m, "fpm_frames_total", &[("dp_rank", &r.to_string())]).is_some());
        seen.then_some(())
    })
    .await;
    phase_tx.send(Phase::Quiet).unwrap();
    phase_tx.send(Phase::Load).unwrap();
    let sent: Vec<usize> = wait_for("every rank's load over", Duration::from_secs(30), || {
        let done: Option<Vec<usize>> = (0..2).map(|r| log.finished(r)).collect();
        async move { done }
    })
    .await;
    // Hold keeps the sockets open while the exporter takes in what is queued.
    phase_tx.send(Phase::Hold).unwrap();
    let after = wait_for(
        "the exporter counted every load frame",
        Duration::from_secs(30),
        || async {
            let m = exporter.metrics().await;
            (0..2)
                .all(|r| per_rank(&m, "fpm_iterations_total", r) >= sent[r] as f64)
                .then_some(m)
        },
    )
    .await;
    phase_tx.send(Phase::Stop).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), gen)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for (r, rank) in report.ranks.iter().enumerate() {
        assert_eq!(rank.load_sent as usize, sent[r], "rank {r}: report vs log");
        assert_eq!(
            per_rank(&after, "fpm_iterations_total", r),
            sent[r] as f64,
            "rank {r}: frames counted by the exporter"
        );
        assert_eq!(
            per_rank(&after, "fpm_frames_total", r),
            per_rank(&after, "fpm_heartbeats_total", r) + sent[r] as f64,
            "rank {r}: frames = heartbeats + iterations"
        );
        assert_eq!(per_rank(&after, "fpm_missed_frames_total", r), 0.0);
    }
    let total = report.load_sent();
    // Paced to the clock: never ahead of 4000/s, and behind only on a loaded machine.
    assert!(
        (1000..=2200).contains(&total),
        "4000 frames/s for 0.5 s sent {total}"
    );
    exporter.stop().await;
}
