//! The load generator puts the captured stream on the wire frame for frame, and the
//! benchmark's loss accounting (sent by the generator vs counted by the exporter)
//! holds at a rate the exporter easily keeps up with.

mod common;

use bytes::Bytes;
use common::{golden_payload as golden, ipc_dir, sample, wait_for, Exporter};
use fpm_exporter::loadgen::{self, LoadConfig, Phase};
use fpm_exporter::publish::FramePublisher;
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
/// sent == fpm_frames_total delta and no sequence gaps. This is the accounting the
/// benchmark's "frames lost" figure relies on.
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
    let gen = tokio::spawn(loadgen::run(config, phase_rx, None));
    let total = |m: &str, name: &str| -> f64 {
        (0..2)
            .map(|r| sample(m, name, &[("dp_rank", &r.to_string())]).unwrap_or(0.0))
            .sum()
    };
    wait_for("both ranks registered", Duration::from_secs(10), || async {
        let m = exporter.metrics().await;
        let seen = (0..2)
            .all(|r| sample(&m, "fpm_frames_total", &[("dp_rank", &r.to_string())]).is_some());
        seen.then_some(())
    })
    .await;
    phase_tx.send(Phase::Quiet).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = exporter.metrics().await;
    phase_tx.send(Phase::Load).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    phase_tx.send(Phase::Hold).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = exporter.metrics().await;
    phase_tx.send(Phase::Stop).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(5), gen)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let sent = report.load_sent();
    assert!(
        (1500..=2200).contains(&sent),
        "4000 frames/s for 0.5 s sent {sent}"
    );
    let counted = total(&after, "fpm_frames_total") - total(&before, "fpm_frames_total");
    assert_eq!(counted as u64, sent, "frames counted by the exporter");
    let missed =
        total(&after, "fpm_missed_frames_total") - total(&before, "fpm_missed_frames_total");
    assert_eq!(missed, 0.0);
    exporter.stop().await;
}
