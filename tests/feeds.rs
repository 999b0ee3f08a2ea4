//! Feeds for routers and planners, end to end with the real SGLang publisher: the load
//! view and its SGLang shape, the online wall_time model against numpy, and a
//! capture -> replay -> capture round trip.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn get_json(exp: &Exporter, path: &str) -> (u16, Value, String) {
    let (status, body) = exp.get(path).await;
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, v, body)
}

fn rank(doc: &Value, dp_rank: u64) -> &Value {
    doc["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dp_rank"] == dp_rank)
        .expect("rank present")
}

fn loaded_frame(scale: u64) -> Value {
    json!({
        "wall_time": 0.01 * scale as f64,
        "scheduled_requests": {
            "num_prefill_requests": scale, "sum_prefill_tokens": 500 * scale, "sum_prefill_kv_tokens": 100 * scale,
            "num_decode_requests": 10 * scale, "sum_decode_kv_tokens": 20000 * scale
        },
        "queued_requests": {
            "num_prefill_requests": 3 * scale, "sum_prefill_tokens": 7000 * scale,
            "num_decode_requests": scale, "sum_decode_kv_tokens": 64
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_follow_the_latest_frame_and_flag_stale_ranks() {
    let dir = common::ipc_dir();
    let base = format!("ipc://{}/l", dir.path().display());
    let exp = Exporter::start(&[
        "--endpoint",
        &base,
        "--ranks",
        "2",
        "--engine",
        "e",
        "--stale-after",
        "4s",
    ])
    .await;
    let mut d = Driver::spawn();
    d.start(0, &format!("{base}.0"), "w");
    d.start(1, &format!("{base}.1"), "w");
    wait_for(
        "both ranks idle in /v1/rank_loads",
        Duration::from_secs(15),
        || async {
            let (_, v, _) = get_json(&exp, "/v1/rank_loads").await;
            let ranks = v["ranks"].as_array()?;
            (ranks.len() == 2
                && ranks
                    .iter()
                    .all(|r| r["state"] == "idle" && r["heartbeat"] == true))
            .then_some(())
        },
    )
    .await;

    // Busy: each rank's load is exactly its latest frame.
    for r in 0..2u64 {
        d.set_idle(r, false);
        d.publish(r, loaded_frame(r + 1), 1);
    }
    let (status, v, full) = wait_for(
        "both frames in /v1/rank_loads",
        Duration::from_secs(10),
        || async {
            let (s, v, body) = get_json(&exp, "/v1/rank_loads").await;
            let ranks = v["ranks"].as_array()?;
            ranks
                .iter()
                .all(|r| r["state"] == "busy")
                .then_some((s, v, body))
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["smoothing_window_s"], 10);
    for s in 1..=2u64 {
        let r = rank(&v, s - 1);
        assert_eq!(r["engine"], "e");
        assert_eq!(r["worker_id"], "w");
        assert_eq!(r["fresh"], true);
        assert_eq!(r["heartbeat"], false);
        assert_eq!(r["running_requests"], 11 * s, "prefill + decode scheduled");
        assert_eq!(r["waiting_requests"], 4 * s, "prefill + decode queued");
        assert_eq!(r["kv_tokens"], 20100 * s, "decode KV + prefill KV read");
        assert_eq!(r["queued_prefill_tokens"], 7000 * s);
        assert_eq!(r["last_wall_time_s"], 0.01 * s as f64);
        assert_eq!(
            r["smoothed_wall_time_s"],
            0.01 * s as f64,
            "one iteration in the window"
        );
        assert!(r["age_ms"].as_u64().unwrap() < 2000);
    }
    // The SGLang shape, at both addresses.
    let (status, gl, gl_body) = get_json(&exp, "/get_load").await;
    assert_eq!(status, 200, "{gl_body}");
    let (_, gl2, gl2_body) =
        get_json(&exp, "/v1/rank_loads?format=sglang&worker_id=w&engine=e").await;
    for doc in [&gl, &gl2] {
        let entries = doc.as_array().unwrap();
        assert_eq!(entries.len(), 2);
        for (i, e) in entries.iter().enumerate() {
            let s = i as u64 + 1;
            assert_eq!(e["dp_rank"], i as u64);
            assert_eq!(e["num_reqs"], 15 * s, "running + waiting");
            assert_eq!(e["num_waiting_reqs"], 4 * s);
            assert_eq!(
                e["num_tokens"],
                27100 * s,
                "KV in use + queued prompt tokens"
            );
            assert_eq!(e["state"], "busy");
        }
    }
    let (_, one, one_body) = get_json(&exp, "/v1/rank_loads?dp_rank=1").await;
    assert_eq!(one["ranks"].as_array().unwrap().len(), 1);

    // A heartbeat means idle with nothing running: the load drops to zero, while the
    // latest iteration's wall_time is still reported as such.
    d.set_idle(0, true);
    let (_, v, idle_body) = wait_for("rank 0 heartbeat", Duration::from_secs(5), || async {
        let (s, v, body) = get_json(&exp, "/v1/rank_loads").await;
        (rank(&v, 0)["heartbeat"] == true).then_some((s, v, body))
    })
    .await;
    let r0 = rank(&v, 0);
    assert_eq!(r0["state"], "idle");
    assert_eq!(r0["fresh"], true);
    for k in [
        "running_requests",
        "waiting_requests",
        "kv_tokens",
        "queued_prefill_tokens",
    ] {
        assert_eq!(r0[k], 0, "{k} after a heartbeat");
    }
    assert_eq!(r0["last_wall_time_s"], 0.01);

    // A silent rank is flagged stale, with its last known load, never shown as empty.
    d.stop(1);
    let (_, v, stale_body) = wait_for("rank 1 stale", Duration::from_secs(12), || async {
        let (s, v, body) = get_json(&exp, "/v1/rank_loads").await;
        (rank(&v, 1)["state"] == "stale").then_some((s, v, body))
    })
    .await;
    let r1 = rank(&v, 1);
    assert_eq!(r1["fresh"], false);
    assert_eq!(r1["running_requests"], 22);
    assert!(r1["age_ms"].as_u64().unwrap() >= 4000);
    let (_, gl, stale_gl) = get_json(&exp, "/get_load").await;
    assert_eq!(gl[1]["state"], "stale");
    assert_eq!(gl[1]["num_reqs"], 30);

    // A second worker on the same rank: /get_load must be told which worker.
    d.cmd(json!({"cmd": "start", "key": "w2", "rank": 1, "endpoint": format!("{base}.1"), "worker_id": "w2"}));
    wait_for("worker w2", Duration::from_secs(10), || async {
        let (_, v, _) = get_json(&exp, "/v1/rank_loads?worker_id=w2").await;
        (v["ranks"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let (status, err, _) = get_json(&exp, "/get_load").await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("e/w2"), "{err}");
    let (status, w2, w2_body) = get_json(&exp, "/get_load?worker_id=w2").await;
    assert_eq!(status, 200);
    assert_eq!(w2.as_array().unwrap().len(), 1);
    assert_eq!(w2[0]["state"], "idle");

    // Bad queries fail loudly; an unknown worker is not an empty success.
    assert_eq!(exp.get("/get_load?worker_id=nobody").await.0, 404);
    assert_eq!(exp.get("/v1/rank_loads?format=xml").await.0, 400);
    assert_eq!(exp.get("/v1/rank_loads?dp_rnk=1").await.0, 400);
    let (_, none, none_body) = get_json(&exp, "/v1/rank_loads?engine=nope").await;
    assert_eq!(none["ranks"].as_array().unwrap().len(), 0);

    common::validate_json(
        "loads",
        &[&full, &one_body, &idle_body, &stale_body, &none_body],
    );
    common::validate_json("get_load", &[&gl_body, &gl2_body, &stale_gl, &w2_body]);
    exp.stop().await;
}

/// The known model the frames follow (intercept, per prefill token, per decode
/// request, per decode KV token), in seconds.
const TRUTH: [f64; 4] = [0.003, 2.0e-5, 5.0e-5, 3.0e-8];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_model_matches_numpy_least_squares_on_real_frames() {
    let port = common::free_port_range(1);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let exp = Exporter::start(&[
        "--endpoint",
        &endpoint,
        "--engine",
        "m",
        "--label",
        "model=llama",
        // The per-rank model gauges below are full-only.
        "--rank-detail",
        "full",
    ])
    .await;
    let mut d = Driver::spawn();
    d.start(0, &endpoint, "fit");
    wait_for("rank up", Duration::from_secs(15), || async {
        let (_, v, _) = get_json(&exp, "/v1/rank_loads").await;
        (v["ranks"].as_array()?.len() == 1).then_some(())
    })
    .await;
    d.set_idle(0, false);

    // 400 iterations from the known model plus noise: pure prefill, pure decode, mixed.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let mut rows = Vec::new();
    for i in 0..400 {
        let (p, dr, k) = match i % 3 {
            0 => (rng.gen_range(64..4096u64), 0, 0),
            1 => {
                let dr = rng.gen_range(1..256u64);
                (0, dr, dr * rng.gen_range(100..3000u64))
            }
            _ => {
                let dr = rng.gen_range(1..256u64);
                (
                    rng.gen_range(64..2048u64),
                    dr,
                    dr * rng.gen_range(100..3000u64),
                )
            }
        };
        let x = [1.0, p as f64, dr as f64, k as f64];
        let y: f64 =
            TRUTH.iter().zip(x).map(|(b, x)| b * x).sum::<f64>() + rng.gen_range(-0.0005..0.0005);
        rows.push(json!([p, dr, k, y]));
        let frame = json!({
            "wall_time": y,
            "scheduled_requests": {
                "num_prefill_requests": (p > 0) as u64, "sum_prefill_tokens": p,
                "num_decode_requests": dr, "sum_decode_kv_tokens": k
            }
        });
        d.cmd(json!({"cmd": "publish", "rank": 0, "metrics": frame, "backpressure": true, "drain": i == 399}));
    }
    wait_for("400 iterations", Duration::from_secs(15), || async {
        let (_, v, _) = get_json(&exp, "/v1/model").await;
        (v["ranks"][0]["model"]["aggregated"]["samples"] == 400).then_some(())
    })
    .await;

    // numpy on the same data.
    let mut py = Command::new(common::venv_python())
        .arg(common::repo_root().join("tests/py/lstsq.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(json!({ "rows": rows }).to_string().as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    let numpy: Value = serde_json::from_slice(&out.stdout).unwrap();

    let q = [1.0, 1000.0, 10.0, 20000.0];
    let (status, doc, body) = get_json(
        &exp,
        "/v1/model?engine=m&prefill_tokens=1000&decode_requests=10&decode_kv_tokens=20000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, ranks_doc, _) = get_json(&exp, "/v1/ranks").await;
    let metrics = exp.metrics().await;
    let terms = |kind: &str| -> &[&str] {
        match kind {
            "prefill" => &["intercept", "prefill_tokens"],
            "decode" => &["intercept", "decode_requests", "decode_kv_tokens"],
            _ => &[
                "intercept",
                "prefill_tokens",
                "decode_requests",
                "decode_kv_tokens",
            ],
        }
    };
    for kind in ["prefill", "decode", "aggregated"] {
        let want = &numpy[kind];
        let want_coef: Vec<f64> = want["coefficients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            want_coef.iter().all(|&c| c > 0.0),
            "the data must not need the constraint: {want_coef:?}"
        );
        for fit in [
            &doc["ranks"][0]["model"][kind],
            &doc["engines"][0]["model"][kind],
            &ranks_doc["ranks"][0]["model"][kind],
            &ranks_doc["engines"][0]["model"][kind],
        ] {
            assert_eq!(fit["samples"], want["samples"], "{kind}");
            for (term, w) in terms(kind).iter().zip(&want_coef) {
                let got = fit["coefficients"][term].as_f64().unwrap();
                assert!(
                    (got - w).abs() <= 1e-6 * w.abs(),
                    "{kind} {term}: {got} vs numpy {w}"
                );
            }
            let r2 = fit["r_squared"].as_f64().unwrap();
            assert!(
                (r2 - want["r_squared"].as_f64().unwrap()).abs() < 1e-8,
                "{kind} R² {r2} vs {}",
                want["r_squared"]
            );
        }
        // The prediction is the fitted line at the query.
        let idx: &[usize] = match kind {
            "prefill" => &[0, 1],
            "decode" => &[0, 2, 3],
            _ => &[0, 1, 2, 3],
        };
        let predicted: f64 = idx.iter().zip(&want_coef).map(|(&i, c)| c * q[i]).sum();
        let got = doc["ranks"][0]["model"][kind]["predicted_wall_time_s"]
            .as_f64()
            .unwrap();
        assert!(
            (got - predicted).abs() <= 1e-6 * predicted,
            "{kind} prediction {got} vs {predicted}"
        );
        // The same fits as gauges.
        for (term, w) in terms(kind).iter().zip(&want_coef) {
            let l = [
                ("engine", "m"),
                ("dp_rank", "0"),
                ("regression", kind),
                ("term", term),
            ];
            let got = sample(&metrics, "fpm_model_coefficient", &l).unwrap();
            assert!(
                (got - w).abs() <= 1e-6 * w.abs(),
                "gauge {kind} {term}: {got} vs {w}"
            );
            let got = sample(
                &metrics,
                "fpm_engine_model_coefficient",
                &[("engine", "m"), ("regression", kind), ("term", term)],
            )
            .unwrap();
            assert!((got - w).abs() <= 1e-6 * w.abs());
        }
        let n = sample(
            &metrics,
            "fpm_model_samples",
            &[("engine", "m"), ("regression", kind)],
        )
        .unwrap();
        assert_eq!(n, want["samples"].as_f64().unwrap());
    }
    let (ok, report) = common::promtool_check(&metrics);
    assert!(
        ok,
        "promtool with the model families (and a user label named model):\n{report}"
    );
    common::validate_json("model", &[&body]);
    assert_eq!(exp.get("/v1/model?prefill_tokens=-1").await.0, 400);
    assert_eq!(exp.get("/v1/model?prefill_tokens=abc").await.0, 400);
    exp.stop().await;
}

#[path = "feeds/capture_replay.rs"]
mod capture_replay;
