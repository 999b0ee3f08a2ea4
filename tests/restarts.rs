//! Engine restarts with the real SGLang publisher, seen the way they happen: the new
//! instance has already numbered frames before the exporter reconnects, so its first
//! frame seen is far above 0, sometimes below where the old one stopped (1000, then
//! ~600) and sometimes above it (a short-lived instance, then a busy one). Each restart
//! counts once; none is a duplicate or a gap (proto/sequence.md).

mod common;

use common::{sample, wait_for, Driver, Exporter};
use serde_json::json;
use std::time::Duration;

fn busy_json() -> serde_json::Value {
    json!({"wall_time": 0.02, "scheduled_requests": {"num_decode_requests": 4}})
}

/// (frames, iterations, restarts, missed, duplicates) of the rank.
fn counts(m: &str, l: &[(&str, &str)]) -> [f64; 5] {
    [
        "fpm_frames_total",
        "fpm_iterations_total",
        "fpm_publisher_restarts_total",
        "fpm_missed_frames_total",
        "fpm_duplicate_frames_total",
    ]
    .map(|name| sample(m, name, l).unwrap_or(f64::NAN))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_publisher_restarts_first_seen_far_from_zero_count_once_each() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/sgl", dir.path().display());
    let endpoint = format!("{base}.0");
    let exp = Exporter::start(&["--endpoint", &base, "--engine", "sgl"]).await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "w-restarts");
    let l = [("worker_id", "w-restarts"), ("dp_rank", "0")];
    wait_for("rank up", Duration::from_secs(15), || async {
        (sample(&exp.metrics().await, "fpm_up", &l) == Some(1.0)).then_some(())
    })
    .await;
    d.publish(0, busy_json(), 1000);
    // A busy machine may make the PUB socket drop some of the burst: those are real
    // gaps on a live connection, counted as missed. None may be added by a restart.
    let c = wait_for(
        "1000 iterations accounted",
        Duration::from_secs(15),
        || async {
            let c = counts(&exp.metrics().await, &l);
            (c[1] + c[3] >= 1000.0).then_some(c)
        },
    )
    .await;
    let missed = c[3];

    // (burst after the restart, restarts expected so far). First a restart seen below
    // where the old instance stopped (~1000 -> ~600), then one seen above it (~650 ->
    // ~1000): a short-lived instance followed by a busier one.
    for (burst, restarts) in [(600, 1.0), (1000, 2.0)] {
        let before = counts(&exp.metrics().await, &l);
        // The new instance numbers `burst` frames at once, before any subscriber can
        // be connected to it (the slow joiner loses them), then heartbeats.
        d.restart(0);
        d.publish(0, busy_json(), burst);
        let after = wait_for(
            "frames from the new instance",
            Duration::from_secs(20),
            || async {
                let c = counts(&exp.metrics().await, &l);
                (c[0] >= before[0] + 2.0).then_some(c)
            },
        )
        .await;
        assert_eq!(
            after[2], restarts,
            "one restart per new instance: {after:?}"
        );
        assert_eq!(after[3], missed, "a restart is not a gap: {after:?}");
        assert_eq!(after[4], 0.0, "a restart is not duplicates: {after:?}");

        // Frames on the new connection keep counting in order.
        d.publish(0, busy_json(), 50);
        let c = wait_for("50 more iterations", Duration::from_secs(15), || async {
            let c = counts(&exp.metrics().await, &l);
            (c[1] >= after[1] + 50.0).then_some(c)
        })
        .await;
        assert_eq!((c[2], c[3], c[4]), (restarts, missed, 0.0), "{c:?}");
    }
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_exporter_ranks_tracked", &[]),
        Some(1.0),
        "the same rank throughout"
    );
    drop(d);
    exp.stop().await;
}
