//! Interop with the real SGLang publisher (`_FpmPublisherThread` from sglang 0.5.23),
//! several ranks over tcp and ipc at once.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

fn busy_frame(i: u64) -> Value {
    json!({
        "wall_time": 0.025 + i as f64 * 0.001,
        "scheduled_requests": {
            "num_prefill_requests": 2, "sum_prefill_tokens": 1000 + i, "var_prefill_length": 12.5,
            "sum_prefill_kv_tokens": 300, "num_decode_requests": 40 + i, "sum_decode_kv_tokens": 90000,
            "var_decode_kv_tokens": 4.0e6
        },
        "queued_requests": {
            "num_prefill_requests": 3, "sum_prefill_tokens": 7000, "var_prefill_length": 1.5,
            "num_decode_requests": 1, "sum_decode_kv_tokens": 512, "var_decode_kv_tokens": 0.0
        }
    })
}

/// Waits until every listed rank has been seen (a heartbeat arrived), which also means
/// the subscription is established and nothing published afterwards is lost.
async fn wait_ranks_up(exp: &Exporter, engine: &str, ranks: &[u64]) {
    for &r in ranks {
        let rank = r.to_string();
        wait_for(
            &format!("{engine} rank {r} up"),
            Duration::from_secs(15),
            || async {
                let m = exp.metrics().await;
                (sample(&m, "fpm_up", &[("engine", engine), ("dp_rank", &rank)]) == Some(1.0))
                    .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_publisher_over_tcp_and_ipc_reports_exact_values() {
    let base = common::free_port_range(2);
    let dir = common::ipc_dir();
    let ipc_base = format!("ipc://{}/sgl", dir.path().display());
    let cfg = dir.path().join("engines.toml");
    std::fs::write(
        &cfg,
        format!(
            "stale_after = \"2s\"\n\
             [[engine]]\nname = \"vllm\"\nendpoint = \"tcp://127.0.0.1:{base}\"\nranks = 2\nrank_detail = \"full\"\nlabels = {{ role = \"decode\", model = \"m1\" }}\n\
             [[engine]]\nname = \"sglang\"\nendpoint = \"{ipc_base}\"\nranks = 2\nrank_detail = \"full\"\nlabels = {{ role = \"prefill\", model = \"m1\" }}\n"
        ),
    )
    .unwrap();
    let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut d = Driver::spawn();
    for r in 0..2u64 {
        d.cmd(json!({"cmd": "start", "key": format!("t{r}"), "rank": r, "endpoint": format!("tcp://127.0.0.1:{}", base + r as u16), "worker_id": "vllm-w"}));
        d.cmd(json!({"cmd": "start", "key": format!("i{r}"), "rank": r, "endpoint": format!("{ipc_base}.{r}"), "worker_id": "sgl-w"}));
    }
    wait_ranks_up(&exp, "vllm", &[0, 1]).await;
    wait_ranks_up(&exp, "sglang", &[0, 1]).await;

    // No heartbeats from here on, so the publisher's own sequence count says which
    // counter_id its last frame carried (a heartbeat would take the next number).
    for key in ["t0", "t1", "i0", "i1"] {
        d.cmd(json!({"cmd": "set_idle", "key": key, "idle": false}));
    }
    // Publish 50 distinct frames on each of the four ranks.
    for key in ["t0", "t1", "i0", "i1"] {
        for i in 0..50u64 {
            d.cmd(json!({"cmd": "publish", "key": key, "metrics": busy_frame(i), "backpressure": true}));
        }
        d.cmd(json!({"cmd": "publish", "key": key, "metrics": busy_frame(50), "drain": true}));
    }
    let m = wait_for(
        "all 51 iterations on every rank",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            let all = [
                ("vllm", "0"),
                ("vllm", "1"),
                ("sglang", "0"),
                ("sglang", "1"),
            ]
            .iter()
            .all(|(e, r)| {
                sample(&m, "fpm_iterations_total", &[("engine", e), ("dp_rank", r)]) == Some(51.0)
            });
            all.then_some(m)
        },
    )
    .await;

    for (engine, worker, role) in [("vllm", "vllm-w", "decode"), ("sglang", "sgl-w", "prefill")] {
        for r in ["0", "1"] {
            let l = [
                ("engine", engine),
                ("worker_id", worker),
                ("dp_rank", r),
                ("role", role),
                ("model", "m1"),
            ];
            // Latest values are exactly the last frame published.
            assert_eq!(
                sample(&m, "fpm_last_wall_time_seconds", &l),
                Some(0.025 + 50.0 * 0.001)
            );
            assert_eq!(
                sample(&m, "fpm_last_scheduled_prefill_tokens", &l),
                Some(1050.0)
            );
            assert_eq!(
                sample(&m, "fpm_last_scheduled_decode_requests", &l),
                Some(90.0)
            );
            assert_eq!(
                sample(&m, "fpm_last_queued_prefill_tokens", &l),
                Some(7000.0)
            );
            assert_eq!(
                sample(&m, "fpm_last_scheduled_decode_kv_tokens_variance", &l),
                Some(4.0e6)
            );
            // Cumulative sums: 51 frames with sum_prefill_tokens 1000..=1050.
            assert_eq!(
                sample(&m, "fpm_prefill_tokens_total", &l),
                Some((1000..=1050).sum::<u64>() as f64)
            );
            assert_eq!(
                sample(&m, "fpm_decode_request_iterations_total", &l),
                Some((40..=90).sum::<u64>() as f64)
            );
            assert_eq!(sample(&m, "fpm_missed_frames_total", &l), Some(0.0));
            assert_eq!(sample(&m, "fpm_publisher_restarts_total", &l), Some(0.0));
            // Window statistics over the same 51 frames.
            let mut wl = l.to_vec();
            wl.extend([
                ("window", "60s"),
                ("field", "scheduled_requests.sum_prefill_tokens"),
            ]);
            assert_eq!(sample(&m, "fpm_window_mean", &wl), Some(1025.0));
            let var = (0..=50).map(|i| (i as f64 - 25.0).powi(2)).sum::<f64>() / 51.0;
            let got = sample(&m, "fpm_window_variance", &wl).unwrap();
            assert!((got - var).abs() < 1e-9, "variance {got} vs {var}");
            assert_eq!(sample(&m, "fpm_window_min", &wl), Some(1000.0));
            assert_eq!(sample(&m, "fpm_window_max", &wl), Some(1050.0));
            let mut ql = l.to_vec();
            ql.extend([("window", "60s"), ("quantile", "1")]);
            let max = sample(&m, "fpm_wall_time_window_seconds", &ql).unwrap();
            assert!((max - 0.075).abs() <= 0.075 * 0.01, "max wall_time {max}");
        }
    }

    // The JSON snapshot carries the same frame with the wire's names and nesting.
    let snap = exp.ranks("?engine=sglang&dp_rank=1").await;
    let ranks = snap["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 1);
    let r = &ranks[0];
    assert_eq!(r["worker_id"], "sgl-w");
    assert_eq!(r["labels"]["role"], "prefill");
    // The real publisher stamped counter_id itself; its sequence counter (read from the
    // publisher object, not from the exporter) is one past the last frame it sent.
    let status = d.cmd(json!({"cmd": "status", "key": "i1"}));
    let next_seq = status["publishers"]["i1"]["next_seq"].as_u64().unwrap();
    assert!(
        next_seq >= 51,
        "51 frames and the warm-up heartbeats: {status}"
    );
    let mut expected = busy_frame(50);
    expected["version"] = json!(1);
    expected["worker_id"] = json!("sgl-w");
    expected["dp_rank"] = json!(1);
    expected["counter_id"] = json!(next_seq - 1);
    assert_eq!(r["last"], expected);
    assert_eq!(r["last_sequence"], json!(next_seq - 1), "sequence frame");
    assert_eq!(r["counters"]["iterations"], 51);
    assert_eq!(
        r["windows"]["60s"]["scheduled_requests"]["sum_prefill_tokens"]["mean"],
        1025.0
    );

    // Idle ranks stay up on heartbeats alone; a stopped publisher goes stale, alone.
    for key in ["t0", "i0", "i1"] {
        d.cmd(json!({"cmd": "set_idle", "key": key, "idle": true}));
    }
    d.cmd(json!({"cmd": "stop", "key": "t1"}));
    let m = wait_for("vllm rank 1 stale", Duration::from_secs(8), || async {
        let m = exp.metrics().await;
        (sample(&m, "fpm_up", &[("engine", "vllm"), ("dp_rank", "1")]) == Some(0.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(
            &m,
            "fpm_rank_state",
            &[("engine", "vllm"), ("dp_rank", "1"), ("state", "stale")]
        ),
        Some(1.0)
    );
    let idle_ranks = [("vllm", "0"), ("sglang", "0"), ("sglang", "1")];
    wait_for(
        "heartbeats from the idle ranks",
        Duration::from_secs(15),
        || async {
            let m = exp.metrics().await;
            idle_ranks
                .iter()
                .all(|(e, r)| {
                    sample(
                        &m,
                        "fpm_rank_state",
                        &[("engine", e), ("dp_rank", r), ("state", "idle")],
                    ) == Some(1.0)
                })
                .then_some(())
        },
    )
    .await;
    // Over a span longer than stale_after (2 s), looked at every 250 ms, the idle
    // ranks stay up and idle on their heartbeats alone.
    let mut m = String::new();
    for _ in 0..10 {
        m = exp.metrics().await;
        for (e, r) in idle_ranks {
            assert_eq!(
                sample(&m, "fpm_up", &[("engine", e), ("dp_rank", r)]),
                Some(1.0),
                "{e}/{r} idle but up"
            );
            assert_eq!(
                sample(
                    &m,
                    "fpm_rank_state",
                    &[("engine", e), ("dp_rank", r), ("state", "idle")]
                ),
                Some(1.0)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        sample(
            &m,
            "fpm_engine_ranks",
            &[("engine", "vllm"), ("state", "stale")]
        ),
        Some(1.0)
    );
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_delivers_real_frames_in_order() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/s", dir.path().display());
    let exp = Exporter::start(&["--endpoint", &base, "--ranks", "1", "--engine", "e"]).await;
    let mut d = Driver::spawn();
    d.start(0, &format!("{base}.0"), "w");
    wait_ranks_up(&exp, "e", &[0]).await;

    let resp = reqwest::get(format!("{}/v1/stream?heartbeats=false", exp.url))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    d.set_idle(0, false);
    for i in 0..200u64 {
        d.cmd(json!({"cmd": "publish", "rank": 0, "metrics": busy_frame(i), "backpressure": true}));
    }
    let mut buf = String::new();
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seqs.len() < 200 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains("event: frame") {
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(
                    v["metrics"]["scheduled_requests"]["sum_prefill_tokens"],
                    1000 + seqs.len() as u64
                );
                assert!(v["received_at_ns"].as_u64().unwrap() > 0);
                seqs.push(v["sequence"].as_u64().unwrap());
            }
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap: {seqs:?}"
    );
    exp.stop().await;
}
