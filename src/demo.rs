//! The simulated engine: real PUB sockets publishing byte-exact FPM frames for a few
//! dp ranks with a plausible load, so that a newcomer sees live numbers at once.
//!
//! Each rank alternates busy spells (an iteration every 15-60 ms: decode batches that
//! grow and shrink, chunked prefills arriving in bursts, a queue that builds up) and
//! idle spells (nothing but a heartbeat every second, as SGLang does when idle).
//! wall_time follows a linear cost model plus noise, like a real GPU iteration.

use crate::publish::FramePublisher;
use crate::wire::{Count, ForwardPassMetrics, QueuedRequests, Real, ScheduledRequests};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::sync::watch;

/// Cost model of the simulated GPU, seconds: base + per prefill token + per decode
/// request + per decode KV token.
pub const COST: [f64; 4] = [0.004, 25e-6, 60e-6, 40e-9];

struct SimRank {
    rng: SmallRng,
    decoding: Vec<u64>,
    waiting: Vec<u64>,
    busy_until: tokio::time::Instant,
    idle_until: tokio::time::Instant,
}

fn variance(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = xs.clone().count() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mean = xs.clone().sum::<f64>() / n;
    xs.map(|x| (x - mean).powi(2)).sum::<f64>() / n
}

impl SimRank {
    /// One scheduler iteration: admit from the queue, run prefill chunk and decodes.
    fn iterate(&mut self, worker_id: &str, dp_rank: u64) -> ForwardPassMetrics {
        let rng = &mut self.rng;
        // Arrivals in bursts.
        if rng.gen_bool(0.15) {
            for _ in 0..rng.gen_range(1..6) {
                self.waiting.push(rng.gen_range(64..6000));
            }
        }
        // Admit one prompt per iteration while there is room, as a chunked prefill.
        let mut prefill = Vec::new();
        if self.decoding.len() < 192 {
            if let Some(len) = self.waiting.pop() {
                prefill.push(len);
            }
        }
        let chunk: u64 = prefill.iter().map(|&l| l.min(2048)).sum();
        let cached: u64 = prefill.iter().map(|&l| (l / 4) * rng.gen_range(0..2)).sum();
        // Decodes grow their context; some finish.
        for ctx in &mut self.decoding {
            *ctx += 1;
        }
        self.decoding.retain(|_| !rng.gen_bool(0.01));
        self.decoding.extend(prefill.iter().copied());
        let decode_kv: u64 = self.decoding.iter().sum();
        let wall = COST[0]
            + COST[1] * chunk as f64
            + COST[2] * self.decoding.len() as f64
            + COST[3] * decode_kv as f64;
        let wall = wall * rng.gen_range(0.95..1.05);
        let waiting_tokens: u64 = self.waiting.iter().sum();
        ForwardPassMetrics {
            version: 1,
            worker_id: worker_id.into(),
            dp_rank,
            counter_id: 0,
            timing_scope: None,
            wall_time: Real(wall),
            scheduled_requests: ScheduledRequests {
                num_prefill_requests: Count(prefill.len() as u64),
                sum_prefill_tokens: Count(chunk),
                var_prefill_length: Real(variance(prefill.iter().map(|&x| x as f64))),
                sum_prefill_kv_tokens: Count(cached),
                num_decode_requests: Count(self.decoding.len() as u64),
                sum_decode_kv_tokens: Count(decode_kv),
                var_decode_kv_tokens: Real(variance(self.decoding.iter().map(|&x| x as f64))),
            },
            queued_requests: QueuedRequests {
                num_prefill_requests: Count(self.waiting.len() as u64),
                sum_prefill_tokens: Count(waiting_tokens),
                var_prefill_length: Real(variance(self.waiting.iter().map(|&x| x as f64))),
                num_decode_requests: Count(0),
                sum_decode_kv_tokens: Count(0),
                var_decode_kv_tokens: Real(0.0),
            },
        }
    }
}

/// Publishes one simulated rank on `address` until `shutdown`.
pub async fn run_rank(
    address: String,
    worker_id: String,
    dp_rank: u64,
    seed: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut publisher = match FramePublisher::bind(&address).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(endpoint = %address, error = %e, "demo engine could not bind");
            return;
        }
    };
    let now = tokio::time::Instant::now();
    let mut sim = SimRank {
        rng: SmallRng::seed_from_u64(seed),
        decoding: Vec::new(),
        waiting: Vec::new(),
        busy_until: now + Duration::from_secs(2 + seed % 5),
        idle_until: now,
    };
    let mut last_sent = now;
    loop {
        let now = tokio::time::Instant::now();
        let pause = if now < sim.busy_until {
            let mut m = sim.iterate(&worker_id, dp_rank);
            let _ = publisher.send(&mut m).await;
            last_sent = now;
            Duration::from_secs_f64(m.wall_time.0.max(0.010))
        } else if now < sim.idle_until {
            if now.duration_since(last_sent) >= Duration::from_secs(1) {
                let mut hb = ForwardPassMetrics {
                    version: 1,
                    worker_id: worker_id.clone(),
                    dp_rank,
                    ..Default::default()
                };
                let _ = publisher.send(&mut hb).await;
                last_sent = now;
            }
            Duration::from_millis(100)
        } else {
            // Switch spells: busy 5-25 s, then idle 3-10 s with requests drained.
            let rng = &mut sim.rng;
            sim.busy_until = now + Duration::from_secs(rng.gen_range(5..25));
            sim.idle_until = sim.busy_until + Duration::from_secs(rng.gen_range(3..10));
            Duration::ZERO
        };
        if now >= sim.busy_until && now < sim.idle_until {
            sim.decoding.clear();
            sim.waiting.clear();
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => break,
        }
    }
    publisher.close().await;
}

/// Starts `ranks` simulated ranks on `base` (tcp port + r or ipc path.r).
pub fn spawn(
    base: &str,
    ranks: u64,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..ranks)
        .filter_map(|r| {
            let address = crate::source::endpoint::rank_address(base, r).ok()?;
            Some(tokio::spawn(run_rank(
                address,
                "demo-engine-0".into(),
                r,
                0x5eed + r,
                shutdown.clone(),
            )))
        })
        .collect()
}
