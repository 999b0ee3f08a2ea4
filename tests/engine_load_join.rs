//! The engine's load snapshots joined with its FPM ranks per (engine, dp_rank): SGLang's
//! real `ShmLoadSnapshotWriter` (tests/py/load_snapshot_driver.py) writes 4 dp ranks of
//! one engine while SGLang's real FPM publisher (tests/py/publisher_driver.py) publishes
//! dp ranks 0-4 of the same engine; `/v1/ranks`, `/v1/engines`, `/v1/rank_loads` and
//! `/get_load` must carry exactly what the writer wrote for each rank, nothing for the
//! FPM rank without a snapshot or for an engine without a `load_snapshot`, and no
//! KV occupancy once the snapshots are stale. Every document is valid against its
//! schema in proto/schema/.

mod common;

use common::snapshots::Writers;
use common::{validate_json, wait_for, Driver, Exporter};
use serde_json::Value;
use std::time::Duration;

const SNAPSHOT_RANKS: u64 = 4;
const FPM_RANKS: u64 = 5;

/// Engine `e0` (FPM ranks 0-4, the writer's file, an empty multiprocess directory so
/// `/v1/engines` lists it) and `f` (FPM only, dp rank 0).
fn config(dir: &std::path::Path, ipc: &str, id: &str, stale_after: &str) -> std::path::PathBuf {
    let mp = dir.join("mp");
    std::fs::create_dir_all(&mp).unwrap();
    let toml = format!(
        "stale_after = \"{stale_after}\"\n\
         [[engine]]\nname = \"e0\"\nendpoint = \"{ipc}/e0\"\nranks = \"0-{}\"\n\
         load_snapshot = \"{}/sglang_loads_{id}_*.shm\"\nmultiproc_dir = \"{}\"\n\
         [[engine]]\nname = \"f\"\nendpoint = \"{ipc}/f\"\nranks = 1\n",
        FPM_RANKS - 1,
        dir.display(),
        mp.display(),
    );
    let path = dir.join(format!("engines-{stale_after}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

async fn json(exp: &Exporter, path: &str) -> (Value, String) {
    let (status, body) = exp.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    (serde_json::from_str(&body).unwrap(), body)
}

/// The entry of (engine, dp_rank) in a list of ranks.
fn find<'a>(ranks: &'a Value, engine: Option<&str>, dp_rank: u64) -> &'a Value {
    ranks
        .as_array()
        .unwrap()
        .iter()
        .find(|r| engine.is_none_or(|e| r["engine"] == e) && r["dp_rank"] == dp_rank)
        .unwrap_or_else(|| panic!("no rank {engine:?}/{dp_rank} in {ranks}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_join_fpm_ranks_in_every_view() {
    let dir = tempfile::tempdir().unwrap();
    let ipc_dir = common::ipc_dir();
    let ipc = format!("ipc://{}", ipc_dir.path().display());

    let mut fpm = Driver::spawn();
    for r in 0..FPM_RANKS {
        fpm.start(r, &format!("{ipc}/e0.{r}"), "w0");
    }
    // Engine f's dp rank 0, beside e0's: the join is per engine.
    fpm.cmd(
        serde_json::json!({"cmd": "start", "rank": FPM_RANKS, "dp_rank": 0,
        "endpoint": format!("{ipc}/f.0"), "worker_id": "wf", "idle": true}),
    );

    let (mut writers, files) = Writers::start(dir.path(), 1, SNAPSHOT_RANKS as u32, 100, 1.0);
    let id = files.as_object().unwrap().keys().next().unwrap().clone();
    let live = Exporter::start(&[
        "--config",
        config(dir.path(), &ipc, &id, "60s").to_str().unwrap(),
    ])
    .await;
    let stale = Exporter::start(&[
        "--config",
        config(dir.path(), &ipc, &id, "1s").to_str().unwrap(),
    ])
    .await;

    // What SGLang's own /v1/loads gives for the final snapshots (no include, no dp_rank).
    let expected = writers.next(Duration::from_secs(60));
    let written: Vec<Value> = expected["expected"][&id]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["include"].is_null() && c["dp_rank"].is_null() && c["format"].is_null())
        .expect("the default case")["json"]["loads"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(written.len() as u64, SNAPSHOT_RANKS);

    wait_for("every FPM rank", Duration::from_secs(20), || async {
        let v = live.ranks("").await;
        (v["ranks"].as_array()?.len() as u64 == FPM_RANKS + 1).then_some(())
    })
    .await;

    // /v1/ranks: each rank of e0 with a snapshot carries it whole; rank 4 has none
    // (null); f reads no snapshots (no key).
    let (ranks, body) = json(&live, "/v1/ranks").await;
    validate_json("ranks", &[body]);
    for (r, want) in written.iter().enumerate() {
        let joined = &find(&ranks["ranks"], Some("e0"), r as u64)["load_snapshot"];
        assert_eq!(joined["state"], "live", "{joined}");
        assert_eq!(&joined["load"], want, "rank {r}");
        assert!(joined["path"].as_str().unwrap().contains(&id));
    }
    let e0_4 = find(&ranks["ranks"], Some("e0"), SNAPSHOT_RANKS);
    assert!(e0_4["load_snapshot"].is_null() && e0_4.get("load_snapshot").is_some());
    assert!(find(&ranks["ranks"], Some("f"), 0)
        .get("load_snapshot")
        .is_none());

    // /v1/engines: e0's worker, its FPM ranks joined the same way.
    let (engines, body) = json(&live, "/v1/engines?engine=e0").await;
    validate_json("engines", &[body]);
    let fpm_ranks = &engines["workers"][0]["fpm"]["ranks"];
    for (r, want) in written.iter().enumerate() {
        assert_eq!(
            &find(fpm_ranks, None, r as u64)["load_snapshot"]["load"],
            want
        );
    }
    assert!(find(fpm_ranks, None, SNAPSHOT_RANKS)["load_snapshot"].is_null());

    // The router views: KV occupancy where a live snapshot exists, null elsewhere.
    let (loads, body) = json(&live, "/v1/rank_loads").await;
    validate_json("loads", &[body]);
    let (get_load, body) = json(&live, "/get_load?engine=e0").await;
    validate_json("get_load", &[body]);
    for view in [&loads["ranks"], &get_load] {
        for (r, want) in written.iter().enumerate() {
            let got = find(view, None, r as u64);
            for k in ["token_usage", "num_used_tokens", "max_total_num_tokens"] {
                assert_eq!(got[k], want[k], "rank {r}: {k}");
            }
            assert!(got["max_total_num_tokens"].as_u64().unwrap() >= 1_000_000);
        }
        let none = find(view, None, SNAPSHOT_RANKS);
        assert!(none["token_usage"].is_null() && none["max_total_num_tokens"].is_null());
    }
    assert!(find(&loads["ranks"], Some("f"), 0)["num_used_tokens"].is_null());

    // SGLang's /v1/loads, valid against its schema.
    let (_, body) = json(&live, "/v1/loads").await;
    validate_json("sglang_loads", &[body]);

    // Once the snapshots are older than --stale-after (the writer has stopped): shown
    // as stale in /v1/ranks, never given to a router.
    wait_for("stale snapshots", Duration::from_secs(10), || async {
        let ranks = stale.ranks("?engine=e0&dp_rank=0").await;
        (ranks["ranks"][0]["load_snapshot"]["state"] == "stale").then_some(())
    })
    .await;
    let (loads, _) = json(&stale, "/v1/rank_loads?engine=e0").await;
    for r in 0..SNAPSHOT_RANKS {
        let got = find(&loads["ranks"], None, r);
        assert!(
            got["token_usage"].is_null() && got["num_used_tokens"].is_null(),
            "{got}"
        );
    }
    let (ranks, _) = json(&stale, "/v1/ranks?engine=e0&dp_rank=1").await;
    assert_eq!(ranks["ranks"][0]["load_snapshot"]["load"], written[1]);

    live.stop().await;
    stale.stop().await;
}
