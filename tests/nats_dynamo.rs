//! Interop with Dynamo's own code over a real nats-server, both ways:
//! - Dynamo's `FpmDirectPublisher` (what TensorRT-LLM workers run, from the
//!   ai-dynamo-runtime 1.6.1 wheel) publishes; the exporter reports exact values.
//! - `--nats-publish` relays frames of the real SGLang publisher; Dynamo's
//!   `FpmEventSubscriber` (what Dynamo's planner runs) decodes them back to the
//!   original FPM, field for field.

mod common;
mod nats_support;

use common::{repo_root, require_test_deps, sample, venv_python, wait_for, Driver, Exporter};
use nats_support::{wait_connected, NatsServer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Dynamo's runtime in `tests/py/dynamo_nats.py`, with file discovery in `kv` (its
/// `DYN_FILE_KV`), so no two test processes share Dynamo's default directory.
fn dynamo(args: &[&str], kv: &std::path::Path) -> Command {
    require_test_deps();
    let mut c = Command::new(venv_python());
    c.arg(repo_root().join("tests/py/dynamo_nats.py"))
        .args(args)
        .env("DYN_LOG", "error")
        .env("DYN_FILE_KV", kv)
        .stderr(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_fpm_direct_publisher_is_ingested_exactly() {
    let nats = NatsServer::start();
    let ex = Exporter::start(&["--nats", &nats.url()]).await;
    wait_connected(&ex, "ingest").await;
    let url = nats.url();
    let kv = tempfile::tempdir().unwrap();
    let kv_path = kv.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        dynamo(
            &["publish", "--url", &url, "--count", "20", "--dp-size", "2"],
            &kv_path,
        )
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "dynamo publisher failed");
    assert!(
        kv.path().join("v1").is_dir(),
        "Dynamo kept its discovery state in this test's own DYN_FILE_KV"
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let sent: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    let sent = sent["published"].as_array().unwrap().clone();
    assert_eq!(sent.len(), 40);
    for dp in 0..2u64 {
        let mine: Vec<&Value> = sent.iter().filter(|v| v["dp_rank"] == dp).collect();
        let q = format!("?worker_id=trt-worker-1&dp_rank={dp}");
        let r = wait_for(
            "20 iterations of the rank",
            Duration::from_secs(10),
            || async {
                let v = ex.ranks(&q).await;
                v["ranks"]
                    .as_array()?
                    .first()
                    .cloned()
                    .filter(|r| r["counters"]["iterations"] == 20)
            },
        )
        .await;
        assert_eq!(r["engine"], "dynamo/backend/generate");
        assert_eq!(r["labels"]["dynamo_component"], "backend");
        assert_eq!(r["counters"]["missed_frames"], 0, "{r}");
        assert_eq!(r["counters"]["duplicate_frames"], 0, "{r}");
        let last = mine.last().unwrap();
        let l = &r["last"];
        for (wire, py) in [
            (
                "scheduled_requests.num_prefill_requests",
                "scheduled_num_prefill_requests",
            ),
            (
                "scheduled_requests.sum_prefill_tokens",
                "scheduled_sum_prefill_tokens",
            ),
            (
                "scheduled_requests.sum_prefill_kv_tokens",
                "scheduled_sum_prefill_kv_tokens",
            ),
            (
                "scheduled_requests.num_decode_requests",
                "scheduled_num_decode_requests",
            ),
            (
                "scheduled_requests.sum_decode_kv_tokens",
                "scheduled_sum_decode_kv_tokens",
            ),
            (
                "queued_requests.num_prefill_requests",
                "queued_num_prefill_requests",
            ),
            (
                "queued_requests.sum_prefill_tokens",
                "queued_sum_prefill_tokens",
            ),
            (
                "queued_requests.num_decode_requests",
                "queued_num_decode_requests",
            ),
            (
                "queued_requests.sum_decode_kv_tokens",
                "queued_sum_decode_kv_tokens",
            ),
        ] {
            let (group, field) = wire.split_once('.').unwrap();
            assert_eq!(l[group][field], last[py], "{wire} of dp_rank {dp}");
        }
        assert_eq!(l["wall_time"].as_f64(), last["wall_time_secs"].as_f64());
        assert_eq!(l["worker_id"], "trt-worker-1");
        assert_eq!(l["scheduled_requests"]["var_prefill_length"], 0.0);
        // Totals over all 20 iterations, exactly.
        let m = ex.metrics().await;
        let total = |name: &str| {
            sample(
                &m,
                name,
                &[("worker_id", "trt-worker-1"), ("dp_rank", &dp.to_string())],
            )
        };
        let sum = |py: &str| mine.iter().map(|v| v[py].as_u64().unwrap()).sum::<u64>() as f64;
        assert_eq!(
            total("fpm_prefill_tokens_total"),
            Some(sum("scheduled_sum_prefill_tokens"))
        );
        assert_eq!(
            total("fpm_decode_kv_tokens_total"),
            Some(sum("scheduled_sum_decode_kv_tokens"))
        );
        assert_eq!(total("fpm_iterations_total"), Some(20.0));
    }
    ex.stop().await;
}

fn busy(i: u64) -> Value {
    json!({
        "wall_time": 0.001 * (i + 1) as f64,
        "scheduled_requests": {"num_prefill_requests": 1, "sum_prefill_tokens": 512 + i,
            "var_prefill_length": 0.25 * i as f64, "sum_prefill_kv_tokens": 3 * i,
            "num_decode_requests": 4 + i, "sum_decode_kv_tokens": 9000 + i,
            "var_decode_kv_tokens": 1.5},
        "queued_requests": {"num_prefill_requests": i % 3, "sum_prefill_tokens": 100 * i,
            "var_prefill_length": 2.0, "num_decode_requests": 1,
            "sum_decode_kv_tokens": 77, "var_decode_kv_tokens": 0.5}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_frames_decode_in_dynamos_subscriber_field_for_field() {
    let nats = NatsServer::start();
    let port = common::free_port_range(1);
    let ex = Exporter::start(&[
        "--endpoint",
        &format!("tcp://127.0.0.1:{port}"),
        "--engine",
        "sgl",
        "--nats-publish",
        &nats.url(),
        "--nats-kv-bucket",
        "",
    ])
    .await;
    let mut d = Driver::spawn();
    d.start(0, &format!("tcp://127.0.0.1:{port}"), "sgl-w");
    wait_for("rank up", Duration::from_secs(10), || async {
        (sample(&ex.metrics().await, "fpm_up", &[("engine", "sgl")]) == Some(1.0)).then_some(())
    })
    .await;
    let url = nats.url();
    let kv = tempfile::tempdir().unwrap();
    let mut sub = dynamo(
        &[
            "subscribe",
            "--url",
            &url,
            "--count",
            "30",
            "--max-seconds",
            "40",
        ],
        kv.path(),
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("subscriber ready");
    assert!(ready.contains("ready"), "{ready}");
    d.set_idle(0, false);
    for i in 0..30u64 {
        d.cmd(json!({"cmd": "publish", "rank": 0, "metrics": busy(i), "drain": true}));
    }
    let mut got = Vec::new();
    while got.len() < 30 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("Dynamo received the relayed frames");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["frame"]["wall_time"].as_f64().unwrap() > 0.0 {
            got.push(v);
        }
    }
    let _ = sub.wait();
    let first_counter = got[0]["frame"]["counter_id"].as_u64().unwrap();
    for (i, v) in got.iter().enumerate() {
        let counter = first_counter + i as u64;
        let mut want = busy(i as u64);
        want["version"] = json!(1);
        want["worker_id"] = json!("sgl-w");
        want["dp_rank"] = json!(0);
        want["counter_id"] = json!(counter);
        // The payload Dynamo handed over is the real SGLang module's own encoding of
        // the original frame, byte for byte (floats included)...
        let original = d.cmd(json!({"cmd": "encode", "metrics": want}));
        assert_eq!(v["hex"], original["hex"], "frame {i}: payload bytes");
        // ...and its fields, as msgspec decoded them on Dynamo's side, are the frame's.
        let f = &v["frame"];
        for key in ["version", "worker_id", "dp_rank", "counter_id"] {
            assert_eq!(f[key], want[key], "frame {i}: {key}");
        }
        for group in ["scheduled_requests", "queued_requests"] {
            for (k, x) in want[group].as_object().unwrap() {
                if x.is_u64() {
                    assert_eq!(&f[group][k], x, "frame {i}: {group}.{k}");
                }
            }
        }
    }
    let m = ex.metrics().await;
    assert!(sample(&m, "fpm_nats_relayed_frames_total", &[]).unwrap() >= 30.0);
    assert_eq!(
        sample(
            &m,
            "fpm_nats_relay_dropped_frames_total",
            &[("reason", "lagged")]
        ),
        Some(0.0)
    );
    ex.stop().await;
}
