//! The capture -> replay -> capture round trip, with the real SGLang publisher.

use super::*;
use fpm_exporter::publisher::replay::{self, ReplayOptions};
use std::collections::BTreeMap;

fn read_capture(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("capture line {l:?}: {e}")))
        .collect()
}

/// Per (worker_id, dp_rank): the metrics in arrival order, with counter_id removed, and
/// the counter_ids apart.
type PerRank = BTreeMap<(String, u64), (Vec<Value>, Vec<u64>)>;

fn per_rank(capture: &[Value]) -> PerRank {
    let mut out = PerRank::new();
    for rec in capture {
        assert!(rec["received_at_ns"].as_u64().unwrap() > 0);
        let mut m = rec["metrics"].clone();
        let key = (
            m["worker_id"].as_str().unwrap().to_string(),
            m["dp_rank"].as_u64().unwrap(),
        );
        let counter = m
            .as_object_mut()
            .unwrap()
            .remove("counter_id")
            .unwrap()
            .as_u64()
            .unwrap();
        let e = out.entry(key).or_default();
        e.0.push(m);
        e.1.push(counter);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_replay_capture_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let cap_a = tmp.path().join("a.jsonl");
    let cap_b = tmp.path().join("b.jsonl");
    let port_a = common::free_port_range(2);
    let ep_a = format!("tcp://127.0.0.1:{port_a}");
    let exp = Exporter::start(&[
        "--endpoint",
        &ep_a,
        "--ranks",
        "2",
        "--record",
        cap_a.to_str().unwrap(),
    ])
    .await;
    // A second exporter may not record over the first one's file.
    let cli = <fpm_exporter::config::Cli as clap::Parser>::parse_from([
        "x",
        "--record",
        cap_a.to_str().unwrap(),
    ]);
    let err = fpm_exporter::config::Settings::from_cli(&cli.run)
        .unwrap_err()
        .0;
    assert!(err.contains("refusing to overwrite"), "{err}");

    let mut d = Driver::spawn();
    for r in 0..2u64 {
        d.start(r, &format!("tcp://127.0.0.1:{}", port_a + r as u16), "cap");
    }
    for r in ["0", "1"] {
        wait_for("rank up", Duration::from_secs(15), || async {
            (sample(&exp.metrics().await, "fpm_up", &[("dp_rank", r)]) == Some(1.0)).then_some(())
        })
        .await;
    }
    // 40 distinct iterations per rank, then idle again until a heartbeat follows.
    for r in 0..2u64 {
        d.set_idle(r, false);
        for i in 0..40u64 {
            let mut f = loaded_frame(1 + r);
            f["wall_time"] = json!(0.001 * (i + 1) as f64 + r as f64);
            f["scheduled_requests"]["sum_prefill_tokens"] = json!(i * 7 + r);
            f["scheduled_requests"]["var_prefill_length"] = json!(i as f64 / 3.0);
            d.cmd(json!({"cmd": "publish", "rank": r, "metrics": f, "backpressure": true, "drain": i == 39}));
        }
        d.set_idle(r, true);
    }
    wait_for(
        "heartbeats after the iterations",
        Duration::from_secs(10),
        || async {
            let (_, v, _) = get_json(&exp, "/v1/rank_loads").await;
            let ranks = v["ranks"].as_array()?;
            (ranks.len() == 2 && ranks.iter().all(|r| r["heartbeat"] == true)).then_some(())
        },
    )
    .await;
    d.stop(0);
    d.stop(1);
    let frames_a = sample(&exp.metrics().await, "fpm_record_frames_total", &[]);
    exp.stop().await;
    let a = read_capture(&cap_a);
    assert!(
        frames_a.unwrap() <= a.len() as f64,
        "everything counted was written by shutdown"
    );
    let pa = per_rank(&a);
    assert_eq!(pa.len(), 2);
    for (key, (metrics, counters)) in &pa {
        let iterations = metrics
            .iter()
            .filter(|m| m["wall_time"].as_f64().unwrap() > 0.0)
            .count();
        assert_eq!(iterations, 40, "{key:?}");
        assert!(metrics.len() > 41, "heartbeats are recorded too: {key:?}");
        assert!(
            counters.windows(2).all(|w| w[1] == w[0] + 1),
            "no frame lost in capture A: {counters:?}"
        );
    }

    // Replay A, 4x faster, into a second exporter that records B.
    let port_b = common::free_port_range(2);
    let ep_b = format!("tcp://127.0.0.1:{port_b}");
    let exp_b = Exporter::start(&[
        "--endpoint",
        &ep_b,
        "--ranks",
        "2",
        "--record",
        cap_b.to_str().unwrap(),
    ])
    .await;
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = ReplayOptions {
        files: vec![cap_a.clone()],
        endpoint: ep_b.clone(),
        speed: 4.0,
        wait: Duration::from_secs(3),
    };
    let report = replay::run(&options, stop_rx).await.expect("replay runs");
    assert_eq!(report.frames as usize, a.len());
    assert_eq!(report.skipped_lines, 0);
    assert_eq!(report.ranks, vec![0, 1]);
    assert!(
        report.elapsed_secs >= report.capture_secs / 4.0 * 0.95,
        "paced at 4x: {} s for a {} s capture",
        report.elapsed_secs,
        report.capture_secs
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = exp_b.metrics().await;
        let per_rank: Vec<_> = ["0", "1"]
            .iter()
            .map(|r| {
                let l = [("dp_rank", *r)];
                let n = |name| sample(&m, name, &l).unwrap_or(0.0) as usize;
                (n("fpm_frames_total"), n("fpm_missed_frames_total"))
            })
            .collect();
        if per_rank.iter().map(|c| c.0).sum::<usize>() == a.len() {
            break;
        }
        // Which frames are missing tells a late subscription (missed at the start)
        // from frames dropped at close (not counted at all).
        assert!(
            std::time::Instant::now() < deadline,
            "B has (frames, missed) {per_rank:?} per rank of {} frames replayed",
            a.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exp_b.stop().await;
    let b = read_capture(&cap_b);
    let pb = per_rank(&b);
    assert_eq!(pa.keys().collect::<Vec<_>>(), pb.keys().collect::<Vec<_>>());
    for (key, (metrics_a, _)) in &pa {
        let (metrics_b, counters_b) = &pb[key];
        // Everything but counter_id is identical, frame by frame, in order.
        assert_eq!(metrics_a, metrics_b, "{key:?}");
        // Replay renumbers like a restarted engine: 0, 1, 2, ... per socket.
        assert_eq!(
            *counters_b,
            (0..counters_b.len() as u64).collect::<Vec<_>>(),
            "{key:?}"
        );
    }
}
