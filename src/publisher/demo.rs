//! The simulated engine: real PUB sockets publishing byte-exact FPM frames for a few
//! dp ranks with a plausible load, so that a newcomer sees live numbers at once.
//!
//! Each rank alternates busy spells (iterations of the shared simulated scheduler,
//! [`super::sim::FrameModel`], paced by their own wall_time: decode batches that grow
//! and shrink, chunked prefills, a queue that builds up) and idle spells (nothing but
//! a heartbeat every second, as SGLang does when idle, with the work drained).

use super::sim::FrameModel;
use super::FramePublisher;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::sync::watch;

/// Ranks of the simulated engine that misbehave, so its balance panels have something
/// to show (`--demo-skew`, `--demo-slow`); by default none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skew {
    /// This rank gets [`HEAVY_WORK`] times the work of the others.
    pub heavy: Option<u64>,
    /// This rank takes [`SLOWNESS`] times as long for the same work.
    pub slow: Option<u64>,
}

/// Work of the heavy rank relative to the others.
pub const HEAVY_WORK: f64 = 3.0;
/// Time per iteration of the slow rank relative to the cost model.
pub const SLOWNESS: f64 = 2.0;

impl Skew {
    fn model(&self, worker_id: &str, dp_rank: u64, seed: u64) -> FrameModel {
        let work = if self.heavy == Some(dp_rank) {
            HEAVY_WORK
        } else {
            1.0
        };
        let slowness = if self.slow == Some(dp_rank) {
            SLOWNESS
        } else {
            1.0
        };
        FrameModel::new(worker_id, dp_rank, seed).skewed(work, slowness)
    }
}

/// Publishes one simulated rank on `address` until `shutdown`.
pub async fn run_rank(
    address: String,
    worker_id: String,
    dp_rank: u64,
    seed: u64,
    skew: Skew,
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
    let mut model = skew.model(&worker_id, dp_rank, seed);
    // Spell lengths draw from their own generator, so the frames stay the model's.
    let mut spells = SmallRng::seed_from_u64(seed);
    let mut busy_until = now + Duration::from_secs(2 + seed % 5);
    let mut idle_until = now;
    let mut last_sent = now;
    loop {
        let now = tokio::time::Instant::now();
        let pause = if now < busy_until {
            let m = model.next_iteration();
            let wall = m.wall_time.0;
            let _ = publisher.send(m).await;
            last_sent = now;
            Duration::from_secs_f64(wall.max(0.010))
        } else if now < idle_until {
            if now.duration_since(last_sent) >= Duration::from_secs(1) {
                let _ = publisher.send(model.heartbeat()).await;
                last_sent = now;
            }
            Duration::from_millis(100)
        } else {
            // Switch spells: busy 5-25 s, then idle 3-10 s with requests drained.
            busy_until = now + Duration::from_secs(spells.gen_range(5..25));
            idle_until = busy_until + Duration::from_secs(spells.gen_range(3..10));
            Duration::ZERO
        };
        if now >= busy_until && now < idle_until {
            model.drain();
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
    skew: Skew,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..ranks)
        .filter_map(|r| {
            let address = crate::address::rank_address(base, r).ok()?;
            Some(tokio::spawn(run_rank(
                address,
                "demo-engine-0".into(),
                r,
                0x5eed + r,
                skew,
                shutdown.clone(),
            )))
        })
        .collect()
}
