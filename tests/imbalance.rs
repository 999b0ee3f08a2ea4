//! DP-rank imbalance and stragglers through the real SGLang publisher: exact synthetic
//! skews (rank 3 with 3x the prefill tokens of the others; rank 1 with twice the wall
//! time for the same work; every rank equal) and the values `/metrics`, `/v1/ranks`
//! and the stream's snapshots report, against the definitions of docs/metrics.md
//! ("Imbalance and stragglers") computed by hand here.

mod common;

use common::{sample, wait_for, Driver, Exporter};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// One iteration: prefill tokens, decode requests, decode KV tokens, wall_time, and a
/// queue of 2 prefill + 1 decode request.
fn frame(prefill: u64, decode: u64, kv: u64, wall: f64) -> Value {
    json!({
        "wall_time": wall,
        "scheduled_requests": {"num_prefill_requests": 1, "sum_prefill_tokens": prefill,
            "num_decode_requests": decode, "sum_decode_kv_tokens": kv},
        "queued_requests": {"num_prefill_requests": 2, "num_decode_requests": 1}
    })
}

/// The frames of each engine's rank r (every frame of a rank the same, so a window's
/// mean is the frame's value whatever the slow-joiner loss).
fn frames(engine: &str, r: u64) -> Value {
    match engine {
        "skew" => frame(if r == 3 { 3000 } else { 1000 }, 32, 64000, 0.03),
        "slow" => frame(500, 16, 32000, if r == 1 { 0.04 } else { 0.02 }),
        _ => frame(800, 24, 48000, 0.025),
    }
}

const ENGINES: [&str; 3] = ["skew", "slow", "even"];

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-9)
}

/// The median of the values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds per scheduled token of rank r, from its frame.
fn spt(engine: &str, r: u64) -> f64 {
    let f = frames(engine, r);
    let s = &f["scheduled_requests"];
    f["wall_time"].as_f64().unwrap()
        / (s["sum_prefill_tokens"].as_f64().unwrap() + s["num_decode_requests"].as_f64().unwrap())
}

/// Reads SSE events until one `engine_snapshot` arrived (bounded by a deadline).
async fn first_engine_snapshot(url: &str) -> (Vec<Value>, Value) {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut ranks = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an engine snapshot in time")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let name = ev.lines().find_map(|l| l.strip_prefix("event: "));
            let data = ev.lines().find_map(|l| l.strip_prefix("data: "));
            match (name, data) {
                (Some("snapshot"), Some(d)) => ranks.push(serde_json::from_str(d).unwrap()),
                (Some("engine_snapshot"), Some(d)) => {
                    return (ranks, serde_json::from_str(d).unwrap())
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_ranks_are_found_with_the_documented_values() {
    let dir = common::ipc_dir();
    let cfg = dir.path().join("engines.toml");
    let mut toml = String::new();
    for e in ENGINES {
        let base = format!("ipc://{}/{e}", dir.path().display());
        toml += &format!("[[engine]]\nname = \"{e}\"\nendpoint = \"{base}\"\nranks = 4\n");
    }
    std::fs::write(&cfg, toml).unwrap();
    let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut d = Driver::spawn();
    for (i, e) in ENGINES.iter().enumerate() {
        for r in 0..4u64 {
            let key = format!("{e}{r}");
            let endpoint = format!("ipc://{}/{e}.{r}", dir.path().display());
            d.cmd(
                json!({"cmd": "start", "key": key, "rank": i as u64 * 4 + r, "dp_rank": r,
                         "endpoint": endpoint, "worker_id": format!("{e}-w"), "idle": false}),
            );
        }
    }
    // Publish until every rank's 10 s window holds iterations (the first frames after a
    // subscription may be lost, which the frames' sameness makes harmless).
    wait_for(
        "every rank with iterations",
        Duration::from_secs(30),
        || {
            for e in ENGINES {
                for r in 0..4u64 {
                    d.cmd(
                        json!({"cmd": "publish", "key": format!("{e}{r}"), "metrics": frames(e, r),
                             "count": 5, "backpressure": true, "drain": true}),
                    );
                }
            }
            let exp = &exp;
            async move {
                let m = exp.metrics().await;
                ENGINES
                    .iter()
                    .all(|e| {
                        sample(
                            &m,
                            "fpm_engine_balance_ranks",
                            &[("engine", e), ("window", "10s")],
                        ) == Some(4.0)
                    })
                    .then_some(())
            }
        },
    )
    .await;

    let m = exp.metrics().await;
    let doc = exp.ranks("").await;
    for win in ["10s", "60s"] {
        let metric = |name: &str, engine: &str, measure: &str| {
            sample(
                &m,
                name,
                &[("engine", engine), ("window", win), ("measure", measure)],
            )
        };
        let balance = |engine: &str| -> &Value {
            let e = doc["engines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["engine"] == engine)
                .unwrap();
            &e["balance"][win]
        };
        // Rank 3 with 3x the prefill tokens: mean (3 x 1000 + 3000) / 4 = 1500, ratio
        // 3000 / 1500 = 2, waiting share 1 - 1500 / 3000 = 0.5; every other measure even.
        let ratio = metric("fpm_engine_imbalance_ratio", "skew", "prefill_tokens").unwrap();
        assert!(close(ratio, 2.0), "{win}: {ratio}");
        assert_eq!(
            metric(
                "fpm_engine_imbalance_heaviest_dp_rank",
                "skew",
                "prefill_tokens"
            ),
            Some(3.0)
        );
        let wait = metric("fpm_engine_lockstep_wait_ratio", "skew", "prefill_tokens").unwrap();
        assert!(close(wait, 0.5), "{win}: {wait}");
        let b = balance("skew");
        assert_eq!(b["ranks"], 4);
        let p = &b["prefill_tokens"];
        assert!(close(p["ratio"].as_f64().unwrap(), 2.0));
        assert!(close(p["mean"].as_f64().unwrap(), 1500.0));
        assert!(close(p["max"].as_f64().unwrap(), 3000.0));
        assert!(close(p["lockstep_wait_ratio"].as_f64().unwrap(), 0.5));
        assert_eq!(p["heaviest"], json!({"worker_id": "skew-w", "dp_rank": 3}));
        for engine in ENGINES {
            for measure in ["decode_requests", "decode_kv_tokens", "queued_requests"] {
                let r = metric("fpm_engine_imbalance_ratio", engine, measure);
                assert_eq!(r, Some(1.0), "{engine} {measure} {win}");
                // On a tie the lowest rank is the heaviest.
                assert_eq!(
                    metric("fpm_engine_imbalance_heaviest_dp_rank", engine, measure),
                    Some(0.0)
                );
            }
            assert_eq!(
                metric("fpm_engine_lockstep_wait_ratio", engine, "queued_requests"),
                None,
                "queued requests are not executed"
            );
            assert!(balance(engine)["queued_requests"]["lockstep_wait_ratio"].is_null());
            if engine != "skew" {
                assert_eq!(
                    metric("fpm_engine_imbalance_ratio", engine, "prefill_tokens"),
                    Some(1.0)
                );
                assert_eq!(
                    metric("fpm_engine_lockstep_wait_ratio", engine, "prefill_tokens"),
                    Some(0.0)
                );
            }
        }
        // Straggler ratio: seconds per token over the median of the other ranks'.
        for engine in ENGINES {
            for r in 0..4u64 {
                let others: Vec<f64> = (0..4).filter(|&o| o != r).map(|o| spt(engine, o)).collect();
                let want = spt(engine, r) / median(others);
                let dp = r.to_string();
                let got = sample(
                    &m,
                    "fpm_rank_straggler_ratio",
                    &[("engine", engine), ("dp_rank", &dp), ("window", win)],
                )
                .unwrap_or_else(|| panic!("no straggler ratio for {engine} {r} {win}"));
                assert!(close(got, want), "{engine} rank {r} {win}: {got} != {want}");
                let rank = doc["ranks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["engine"] == engine && x["dp_rank"] == r)
                    .unwrap();
                let s = &rank["straggler"][win];
                assert!(close(s["ratio"].as_f64().unwrap(), want));
                assert!(close(
                    s["seconds_per_token"].as_f64().unwrap(),
                    spt(engine, r)
                ));
            }
        }
        // The slow rank is exactly twice as slow; nobody else straggles.
        let slow = |r: &str| {
            sample(
                &m,
                "fpm_rank_straggler_ratio",
                &[("engine", "slow"), ("dp_rank", r), ("window", win)],
            )
        };
        assert!(close(slow("1").unwrap(), 2.0));
        assert!(close(slow("0").unwrap(), 1.0));
        assert_eq!(
            sample(
                &m,
                "fpm_rank_straggler_ratio",
                &[("engine", "even"), ("dp_rank", "2"), ("window", win)]
            ),
            Some(1.0)
        );
    }
    common::validate_json("ranks", &[serde_json::to_string(&doc).unwrap()]);
    let (ok, out) = common::promtool_check(&m);
    assert!(ok, "{out}");

    // The stream's sampling mode: the rank snapshots carry the straggler figures, and
    // the engine snapshot the balance.
    let (ranks, engine) =
        first_engine_snapshot(&format!("{}/v1/stream?interval=200ms&engine=skew", exp.url)).await;
    assert_eq!(engine["engine"], "skew");
    assert_eq!(
        engine["balance"]["60s"]["prefill_tokens"]["heaviest"]["dp_rank"],
        3
    );
    assert!(close(
        engine["balance"]["60s"]["prefill_tokens"]["ratio"]
            .as_f64()
            .unwrap(),
        2.0
    ));
    common::validate_json("stream:engine_snapshot", &[engine.to_string()]);
    assert_eq!(ranks.len(), 4, "one snapshot per rank before the engine's");
    for r in &ranks {
        assert!(r["straggler"]["60s"]["ratio"].is_number(), "{r}");
    }
    drop(d);
    exp.stop().await;
}
