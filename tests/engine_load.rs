//! The engine's own load: SGLang's real `ShmLoadSnapshotWriter` (sglang 0.5.23, through
//! tests/py/load_snapshot_driver.py) writes 2 engines x 4 ranks at 100 snapshots/s per
//! rank; the exporter's `/v1/loads` must be what SGLang's own `get_loads` handler
//! answers for the same snapshots, for every include and dp_rank, in JSON and in
//! `format=prometheus`; and no read during the writes may see a torn slot.

mod common;

use common::snapshots::Writers;
use common::{promtool_check, sample, validate_json, Exporter};
use serde_json::Value;

fn config(dir: &std::path::Path, files: &Value, stale_after: &str) -> std::path::PathBuf {
    let mut toml = format!("stale_after = \"{stale_after}\"\n");
    for (i, (id, _)) in files.as_object().unwrap().iter().enumerate() {
        toml += &format!(
            "[[engine]]\nname = \"e{i}\"\nload_snapshot = \"{}/sglang_loads_{}_*.shm\"\nsglang_version = \"0.5.23\"\n",
            dir.display(),
            id
        );
    }
    let path = dir.join("engines.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Every entry ties its fields together as the driver wrote them: a torn slot would not.
fn check_untorn(doc: &Value) -> usize {
    let loads = doc["loads"].as_array().expect("loads");
    for l in loads {
        let (run, rank) = (
            l["num_running_reqs"].as_i64().unwrap(),
            l["dp_rank"].as_i64().unwrap(),
        );
        assert_eq!(
            l["num_used_tokens"].as_i64().unwrap(),
            7 * run + rank,
            "{l}"
        );
        assert_eq!(
            l["num_total_tokens"].as_i64().unwrap(),
            7 * run + rank + 100,
            "{l}"
        );
        assert_eq!(
            l["memory"]["token_capacity"], l["max_total_num_tokens"],
            "{l}"
        );
    }
    loads.len()
}

/// Whether SGLang's `to_dict` refuses this include (when it has a load to render).
fn unknown_section(include: &str) -> bool {
    let names: Vec<&str> = include.split(',').map(str::trim).collect();
    let valid = ["core", "memory", "spec", "lora", "disagg", "queues"];
    !include.is_empty() && !names.contains(&"all") && names.iter().any(|n| !valid.contains(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_writer_snapshots_come_out_as_sglangs_own_v1_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut writers, files) = Writers::start(dir.path(), 2, 4, 100, 1.5);
    let cfg = config(dir.path(), &files, "60s");
    let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
    let client = reqwest::Client::new();

    // While the writers run at 100 snapshots/s per rank: every read is whole.
    let (mut polls, mut entries) = (0, 0);
    let expected = loop {
        if let Some(v) = writers.try_next() {
            break v;
        }
        for e in ["e0", "e1"] {
            let (status, body) = exp.get(&format!("/engines/{e}/v1/loads")).await;
            assert_eq!(status, 200, "{body}");
            entries += check_untorn(&serde_json::from_str(&body).unwrap());
            polls += 1;
        }
    };
    assert!(
        polls >= 20 && entries >= polls * 3,
        "{polls} polls saw {entries} entries"
    );
    assert!(expected["snapshots_per_rank"].as_u64().unwrap() >= 100);

    // After the last write: SGLang's handler and the exporter, case by case.
    let (mut compared, mut bodies) = (0, Vec::new());
    for (i, (id, cases)) in expected["expected"].as_object().unwrap().iter().enumerate() {
        assert!(files[id].is_string());
        for case in cases.as_array().unwrap() {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(inc) = case["include"].as_str() {
                q.push(("include", inc.to_owned()));
            }
            if let Some(d) = case["dp_rank"].as_i64() {
                q.push(("dp_rank", d.to_string()));
            }
            if let Some(f) = case["format"].as_str() {
                q.push(("format", f.to_owned()));
            }
            let url = format!("{}/engines/e{i}/v1/loads", exp.url);
            let r = client.get(&url).query(&q).send().await.unwrap();
            let status = r.status().as_u16();
            let ctype = r.headers()["content-type"].to_str().unwrap().to_owned();
            let body = r.text().await.unwrap();
            let what = format!("{case}");
            if case.get("error").is_some() || case["include"].as_str().is_some_and(unknown_section)
            {
                // SGLang checks include only when it has a load to render (and then
                // raises); an unknown section is a 400 here whatever the dp_rank.
                assert_eq!(status, 400, "{what}: {body}");
            } else if let Some(text) = case["prometheus"].as_str() {
                assert_eq!(status, 200, "{what}");
                assert_eq!(ctype, case["media_type"].as_str().unwrap());
                assert_eq!(body, text, "{what}");
            } else {
                assert_eq!(status, 200, "{what}: {body}");
                let ours: Value = serde_json::from_str(&body).unwrap();
                let theirs = &case["json"];
                let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
                assert_eq!(keys(&ours), keys(theirs), "{what}");
                assert!(ours["timestamp"].as_str().unwrap().ends_with("+00:00"));
                for k in ["version", "accelerator", "num_accelerators", "loads"] {
                    // serde_json's Value keeps int and float apart: equal means the
                    // same numbers of the same kinds.
                    assert_eq!(ours[k], theirs[k], "{what}: {k}");
                }
                bodies.push(body);
            }
            compared += 1;
        }
    }
    assert!(compared > 1900, "{compared}");
    // Every JSON answer, each include and dp_rank, against proto/schema/.
    validate_json("sglang_loads", &bodies);

    // Two engines: a bare /v1/loads must be told which.
    assert_eq!(exp.get("/v1/loads").await.0, 400);
    assert_eq!(exp.get("/v1/loads?engine=e1&dp_rank=2").await.0, 200);
    assert_eq!(exp.get("/v1/loads?engine=nope").await.0, 404);
    assert_eq!(exp.get("/engines/e0/health").await.0, 200);

    // /metrics: every rank's fields, and promtool accepts the exposition.
    let metrics = exp.metrics().await;
    for e in ["e0", "e1"] {
        for r in 0..4 {
            let r = r.to_string();
            let l = [("engine", e), ("dp_rank", r.as_str())];
            assert!(sample(&metrics, "fpm_load_snapshot_num_running_reqs", &l).unwrap() >= 100.0);
            assert!(sample(&metrics, "fpm_load_snapshot_token_usage_ratio", &l).is_some());
        }
        assert_eq!(
            sample(
                &metrics,
                "fpm_load_snapshot_ranks",
                &[("engine", e), ("state", "live")]
            ),
            Some(4.0)
        );
    }
    let (ok, out) = promtool_check(&metrics);
    assert!(ok, "{out}");
    exp.stop().await;
}
