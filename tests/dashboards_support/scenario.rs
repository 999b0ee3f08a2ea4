//! The live scenario: an exporter with two engines fed by real SGLang publishers and
//! the test's own faulty one, scraped by a real Prometheus with the shipped rules.
//! Every panel and every alert gets something to show.

use super::api::{unix_now, Api};
use super::{JOB, RULES};
use crate::common::prometheus::Prometheus;
use crate::common::{self, repo_root, Driver, Exporter};
use fpm_exporter::publisher::socket::FramePublisher;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The running scenario and what its checks read.
pub struct Scenario {
    /// When the scenario started (the suite's time budget counts from here).
    pub t0: Instant,
    /// Unix time at the start: the beginning of the range queries.
    pub started_unix: f64,
    /// The exporter under test.
    pub exp: Exporter,
    /// The real Prometheus scraping it.
    pub prom: Prometheus,
    /// Its query API.
    pub api: Api,
    /// The second scrape target of the job, where nothing listens.
    pub dead_target: String,
    d: Driver,
    faulty: FramePublisher,
    faulty_seq: u64,
    // Holds the ipc sockets and the config file for the scenario's lifetime.
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// Exporter (engines sglang over ipc, vllm over tcp), Prometheus with the rules and
    /// a dead second target, real publishers on sglang 0-3 and vllm 0, the faulty vllm 1.
    pub async fn start() -> Scenario {
        let t0 = Instant::now();
        let started_unix = unix_now();
        let tcp = common::free_port_range(3);
        let dir = common::ipc_dir();
        let ipc = format!("ipc://{}/sgl", dir.path().display());
        let ipc_dp = format!("ipc://{}/dp", dir.path().display());
        let cfg = dir.path().join("engines.toml");
        std::fs::write(
            &cfg,
            format!(
                "stale_after = \"2s\"\nexpire_after = \"10s\"\nwindows = [\"20s\", \"60s\"]\n\
                 [[engine]]\nname = \"sglang\"\nendpoint = \"{ipc}\"\nranks = 4\nlabels = {{ model = \"m1\", role = \"prefill\" }}\n\
                 [[engine]]\nname = \"vllm\"\nendpoint = \"tcp://127.0.0.1:{tcp}\"\nranks = 3\nlabels = {{ model = \"m1\", role = \"decode\" }}\n\
                 [[engine]]\nname = \"dp\"\nendpoint = \"{ipc_dp}\"\nranks = 4\nlabels = {{ model = \"m2\", role = \"agg\" }}\n"
            ),
        )
        .unwrap();
        let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
        let exporter_target = exp.url.trim_start_matches("http://").to_string();
        // A second target of the same job where nothing listens: the exporter-down alert's case.
        let dead_target = format!("127.0.0.1:{}", common::free_port());
        let prom = Prometheus::start(
            JOB,
            &[exporter_target.clone(), dead_target.clone()],
            Some(&repo_root().join(RULES)),
        );
        let api = Api {
            url: prom.url.clone(),
            client: reqwest::Client::new(),
        };

        // Real publishers: sglang 0-3 over ipc, vllm 0 over tcp. vllm 1 is the test's own
        // byte-exact publisher, for what the real one never sends (gaps, garbage); vllm 2
        // is configured but never started.
        let mut d = Driver::spawn();
        for r in 0..4u64 {
            d.start(
                r,
                &format!("{ipc}.{r}"),
                &format!("sgl-{}", if r < 2 { "a" } else { "b" }),
            );
        }
        d.cmd(json!({"cmd": "start", "key": "v0", "rank": 0, "endpoint": format!("tcp://127.0.0.1:{tcp}"), "worker_id": "vllm-a"}));
        // Engine dp: rank 3 gets 3x the prefill tokens (imbalance), rank 1 twice the
        // wall time for the same work (a straggler).
        for r in 0..4u64 {
            d.cmd(
                json!({"cmd": "start", "key": format!("dp{r}"), "rank": r, "dp_rank": r,
                         "endpoint": format!("{ipc_dp}.{r}"), "worker_id": "dp-w"}),
            );
        }
        let faulty = FramePublisher::bind(&format!("tcp://127.0.0.1:{}", tcp + 1))
            .await
            .expect("bind vllm rank 1");
        let faulty_seq = 0u64;
        Scenario {
            t0,
            started_unix,
            exp,
            prom,
            api,
            dead_target,
            d,
            faulty,
            faulty_seq,
            _dir: dir,
        }
    }

    /// Until the exporter sees every started rank and Prometheus has scraped them.
    pub async fn wait_until_up_and_scraped(&mut self) {
        // Until the exporter sees every started rank (the faulty one once it is subscribed).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = faulty_payload(&mut self.d, self.faulty_seq);
            self.faulty.send_raw(self.faulty_seq, p).await.unwrap();
            self.faulty_seq += 1;
            let m = self.exp.metrics().await;
            let up = |e: &str, r: &str| {
                common::sample(&m, "fpm_up", &[("engine", e), ("dp_rank", r)]) == Some(1.0)
            };
            if ["0", "1", "2", "3"]
                .iter()
                .all(|r| up("sglang", r) && up("dp", r))
                && up("vllm", "0")
                && up("vllm", "1")
            {
                break;
            }
            assert!(Instant::now() < deadline, "ranks not up after 30 s:\n{m}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let r = async {
                reqwest::get(format!("{}/api/v1/query?query=fpm_up", self.prom.url))
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            };
            if r.await
                .is_some_and(|r| r["data"]["result"].as_array().is_some_and(|a| a.len() >= 6))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not scrape the exporter within 40 s; its log:\n{}",
                self.prom.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("ranks up and scraped after {:?}", self.t0.elapsed());
    }

    /// sglang rank 3 stops (stale after 2 s, expired after 10 s), then 12 s of traffic
    /// with restarts, gaps, garbage and a reconnect; returns when the faulty rank falls
    /// silent.
    pub async fn run_traffic(&mut self) -> Instant {
        // sglang rank 3 goes away now: stale after 2 s, expired after 10 s.
        self.d.stop(3);
        // 12 s of traffic, a tick every 250 ms.
        let mut i = 0u64;
        for tick in 0..48u64 {
            let tick_end = tokio::time::Instant::now() + Duration::from_millis(250);
            for r in 0..2u64 {
                for _ in 0..3 {
                    self.d.cmd(json!({"cmd": "publish", "rank": r, "metrics": sglang_frame(i), "backpressure": true}));
                    i += 1;
                }
            }
            self.d.cmd(json!({"cmd": "publish", "key": "v0", "metrics": stuck_queue_frame(tick), "backpressure": true}));
            for r in 0..4u64 {
                self.d.cmd(json!({"cmd": "publish", "key": format!("dp{r}"), "metrics": dp_frame(r), "count": 2, "backpressure": true}));
            }
            // Every other sequence number of the faulty rank never arrives.
            self.faulty_seq += 1;
            let p = faulty_payload(&mut self.d, self.faulty_seq);
            self.faulty.send_raw(self.faulty_seq, p).await.unwrap();
            self.faulty_seq += 1;
            if tick % 8 == 3 {
                // Not msgpack at all, then a message with the wrong number of frames.
                self.faulty
                    .send_raw(
                        self.faulty_seq,
                        bytes::Bytes::from_static(b"\xc1 not an FPM frame"),
                    )
                    .await
                    .unwrap();
                self.faulty
                    .send_frames(vec![bytes::Bytes::new()])
                    .await
                    .unwrap();
            }
            if tick == 12 || tick == 24 || tick == 36 {
                self.d.restart(1);
            }
            if tick == 20 {
                // A message over the 4 MiB limit ends the connection; what the faulty
                // rank sends until the exporter is back is lost across the reconnect.
                self.faulty
                    .send_frames(vec![bytes::Bytes::from(vec![0u8; 5 << 20])])
                    .await
                    .unwrap();
            }
            tokio::time::sleep_until(tick_end).await;
        }
        // The faulty rank falls silent too: stale from now on (it would expire 10 s later).
        let silent_at = Instant::now();
        eprintln!("traffic done after {:?}", self.t0.elapsed());
        silent_at
    }

    /// Publishers and exporter stopped.
    pub async fn stop(self) {
        drop(self.d);
        self.faulty.close().await;
        self.exp.stop().await;
    }
}

/// A real-module encoding of a busy frame for the test's own vllm rank 1: the same
/// decode work as vllm rank 0 with a steady queue, so the engine is balanced and its
/// queue alert stays on rank 0.
pub fn faulty_payload(d: &mut Driver, seq: u64) -> bytes::Bytes {
    let mut m = stuck_queue_frame(0);
    m["worker_id"] = json!("vllm-b");
    m["dp_rank"] = json!(1);
    m["counter_id"] = json!(seq);
    d.encode(m)
}

/// An iteration of engine dp's rank r: rank 3 computes 3x the prefill tokens of the
/// others, rank 1 takes twice as long for the same work.
pub fn dp_frame(r: u64) -> Value {
    json!({
        "wall_time": if r == 1 { 0.04 } else { 0.02 },
        "scheduled_requests": {
            "num_prefill_requests": 1, "sum_prefill_tokens": if r == 3 { 3000 } else { 1000 },
            "num_decode_requests": 32, "sum_decode_kv_tokens": 64000
        },
        "queued_requests": {"num_prefill_requests": 1, "sum_prefill_tokens": 900}
    })
}

/// A busy SGLang iteration, varied by `i`.
pub fn sglang_frame(i: u64) -> Value {
    json!({
        "wall_time": 0.02 + (i % 10) as f64 * 0.003,
        "scheduled_requests": {
            "num_prefill_requests": 2, "sum_prefill_tokens": 1500 + (i % 7) * 100, "var_prefill_length": 40000.0 + i as f64,
            "sum_prefill_kv_tokens": 256, "num_decode_requests": 30 + i % 5, "sum_decode_kv_tokens": 60000 + 100 * i,
            "var_decode_kv_tokens": 1.0e6
        },
        "queued_requests": {
            "num_prefill_requests": 4, "sum_prefill_tokens": 6000, "var_prefill_length": 250000.0,
            "num_decode_requests": 1, "sum_decode_kv_tokens": 800, "var_decode_kv_tokens": 0.0
        }
    })
}

/// A decode-only iteration whose prefill queue keeps growing: requests pile up, none is admitted.
pub fn stuck_queue_frame(tick: u64) -> Value {
    json!({
        "wall_time": 0.015,
        "scheduled_requests": {"num_decode_requests": 64, "sum_decode_kv_tokens": 120000, "var_decode_kv_tokens": 2.0e6},
        "queued_requests": {
            "num_prefill_requests": 1 + tick / 2, "sum_prefill_tokens": 1000 + 300 * tick, "var_prefill_length": 1000.0,
            "num_decode_requests": 2, "sum_decode_kv_tokens": 3000, "var_decode_kv_tokens": 0.0
        }
    })
}
