//! Two nodes, one configuration: two edge exporters run with the same engines.toml
//! (as the DaemonSet of deploy/edge.yaml gives every node), each beside a real SGLang
//! publisher launched with its default worker id "" and 2 ranks, and relay to one
//! nats-server. Each edge learns its node from `NODE_NAME` (the downward API), so the
//! central exporter shows 4 ranks with each node's own numbers, and the KV table has 4
//! keys that never flip between nodes.

mod common;
mod nats_support;

use common::{sample, wait_for, Driver, Exporter};
use futures::StreamExt;
use nats_support::{busy, Edge, NatsServer};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts an edge with `config`, in `cwd` (the config's relative ipc path is then this
/// node's own socket directory), as node `node` when given.
fn edge(config: &std::path::Path, cwd: &std::path::Path, node: Option<&str>) -> Edge {
    let port = common::free_port_range(1);
    let mut c = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"));
    c.arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env_remove("NODE_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(n) = node {
        c.env("NODE_NAME", n);
    }
    Edge {
        child: c.spawn().expect("spawn edge exporter"),
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_with_one_config_are_two_sets_of_ranks() {
    let nats = NatsServer::start();
    let central = Exporter::start(&["--nats", &nats.url()]).await;
    // The old topology: every relayed rank's series at the central too.
    let central_all =
        Exporter::start(&["--nats", &nats.url(), "--nats-relayed-series", "central"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("engines.toml");
    // deploy/edge.yaml's shape: one file for every node.
    std::fs::write(
        &config,
        format!(
            "[nats]\npublish_url = \"{}\"\nkv_bucket = \"fpm-loads\"\n\n\
             [[engine]]\nname = \"sglang\"\nendpoint = \"ipc://fpm\"\nranks = 2\n\
             nats = {{ component = \"sglang\" }}\n",
            nats.url()
        ),
    )
    .unwrap();
    let nodes = [("gpu-node-a", 4u64, 6u64), ("gpu-node-b", 40, 9)];
    let mut edges = Vec::new();
    let mut drivers = Vec::new();
    for (node, running, count) in nodes {
        let cwd = dir.path().join(node);
        std::fs::create_dir(&cwd).unwrap();
        edges.push(edge(&config, &cwd, Some(node)));
        let mut d = Driver::spawn();
        for rank in 0..2 {
            d.start(rank, &format!("ipc://{}/fpm.{rank}", cwd.display()), "");
        }
        drivers.push((d, running, count));
    }
    for e in &edges {
        wait_for("edge ranks up", Duration::from_secs(15), || async {
            let m = reqwest::get(format!("{}/metrics", e.url))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (sample(&m, "fpm_up", &[("dp_rank", "0")]) == Some(1.0)
                && sample(&m, "fpm_up", &[("dp_rank", "1")]) == Some(1.0)
                && sample(&m, "fpm_nats_connected", &[("role", "publish")]) == Some(1.0))
            .then_some(())
        })
        .await;
    }
    for (d, running, count) in &mut drivers {
        for rank in 0..2 {
            d.set_idle(rank, false);
            d.publish(rank, busy(*running), *count);
        }
    }
    // The central: 4 ranks, each with its own node's frames, never the sum.
    let ranks = wait_for("4 ranks at the centre", Duration::from_secs(15), || async {
        let doc = central.ranks("").await;
        let ranks = doc["ranks"].as_array()?.clone();
        let done = ranks.len() == 4
            && ranks.iter().all(|r| {
                let n = r["labels"]["node"].as_str().unwrap_or("");
                let want = nodes.iter().find(|x| x.0 == n).map(|x| x.2);
                want == r["counters"]["iterations"].as_u64()
            });
        done.then_some(ranks)
    })
    .await;
    for (node, running, count) in nodes {
        for dp in 0..2u64 {
            let r = ranks
                .iter()
                .find(|r| r["labels"]["node"] == node && r["dp_rank"] == dp)
                .unwrap_or_else(|| panic!("rank {dp} of {node} at the centre: {ranks:?}"));
            assert_eq!(r["worker_id"], "");
            assert_eq!(
                r["last"]["scheduled_requests"]["num_decode_requests"], running,
                "{node} rank {dp}"
            );
            assert_eq!(r["counters"]["missed_frames"], 0, "{node} rank {dp}");
            assert_eq!(r["counters"]["publisher_restarts"], 0, "{node} rank {dp}");
        }
        let dp0 = [("node", node), ("dp_rank", "0")];
        // At the default, relayed ranks' series are their edges' to serve (below).
        let m = central.metrics().await;
        assert_eq!(sample(&m, "fpm_iterations_total", &dp0), None, "{node}");
        assert_eq!(sample(&m, "fpm_engine_ranks", &[("node", node)]), None);
        wait_for(
            "the old topology's series",
            Duration::from_secs(15),
            || async {
                let m = central_all.metrics().await;
                (sample(&m, "fpm_iterations_total", &dp0) == Some(count as f64)).then_some(())
            },
        )
        .await;
    }
    // The edges label their own series with their node too.
    for (e, (node, _, count)) in edges.iter().zip(nodes) {
        let m = reqwest::get(format!("{}/metrics", e.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            sample(
                &m,
                "fpm_iterations_total",
                &[("node", node), ("engine", "sglang"), ("dp_rank", "1")]
            ),
            Some(count as f64)
        );
    }
    // The KV table: 4 keys, one per node and rank, each with its node's load.
    let js = async_nats::jetstream::new(nats.client().await);
    let kv = wait_for("the bucket", Duration::from_secs(10), || async {
        js.get_key_value("fpm-loads").await.ok()
    })
    .await;
    let entries = wait_for("4 KV entries", Duration::from_secs(10), || async {
        let keys: Vec<String> = kv
            .keys()
            .await
            .ok()?
            .filter_map(|k| async { k.ok() })
            .collect()
            .await;
        let mut out = Vec::new();
        for k in &keys {
            let v: Value = serde_json::from_slice(&kv.get(k).await.ok()??).ok()?;
            out.push((k.clone(), v));
        }
        (out.len() == 4
            && out
                .iter()
                .all(|(_, v)| v["running_requests"].as_u64() > Some(0)))
        .then_some(out)
    })
    .await;
    for (node, running, _) in nodes {
        let mine: Vec<_> = entries.iter().filter(|(k, _)| k.contains(node)).collect();
        assert_eq!(mine.len(), 2, "{node}'s keys in {entries:?}");
        for (k, v) in mine {
            assert_eq!(v["running_requests"], running, "{k}");
        }
    }
    central.stop().await;
    central_all.stop().await;
}

#[tokio::test]
async fn an_edge_without_node_name_takes_the_hostname() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("engines.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\npublish_url = \"{}\"\nkv_bucket = \"\"\n\n\
             [[engine]]\nname = \"sglang\"\nendpoint = \"ipc://fpm\"\nranks = 1\n",
            nats.url()
        ),
    )
    .unwrap();
    let e = edge(&config, dir.path(), None);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let m = wait_for("edge up", Duration::from_secs(10), || async {
        reqwest::get(format!("{}/metrics", e.url))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })
    .await;
    assert!(
        m.contains(&format!("node=\"{host}\"")),
        "the hostname labels the edge's engines"
    );
}
