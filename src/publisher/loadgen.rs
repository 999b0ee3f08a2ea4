//! The load generator behind `fpm-loadgen` and `fpm-bench`: N ranks, each a real PUB
//! socket publishing byte-exact FPM frames through [`FramePublisher`] (so the bytes
//! on the wire are exactly what the released publisher sends), at a target rate or
//! flat out, with field values that move the way a busy scheduler's do.
//!
//! A run has phases driven by a [`Phase`] watch channel, so a harness can line the
//! publishers up with the consumer before it counts anything:
//! `Warmup` (a heartbeat per rank every 100 ms, until the consumer has seen every
//! rank), `Quiet` (nothing sent: counters settle), `Load` (frames at the rate until
//! the duration is over), `Hold` (sockets stay open so queued frames drain), `Stop`.

use super::sim::FrameModel;
use super::FramePublisher;
use crate::address::rank_address;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where a run stands; every rank task follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Heartbeats every 100 ms so the consumer connects and registers every rank.
    Warmup,
    /// Nothing is sent.
    Quiet,
    /// Frames at the configured rate, for the configured duration.
    Load,
    /// Load is over; sockets stay open so queued frames are delivered.
    Hold,
    /// Close the sockets and report.
    Stop,
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base endpoint: rank r binds `tcp://host:port+r` or `ipc://path.r`.
    pub endpoint: String,
    /// Number of ranks (one PUB socket each).
    pub ranks: u64,
    /// The worker_id every rank carries.
    pub worker_id: String,
    /// Total frames per second over all ranks; `None` = flat out.
    pub rate: Option<f64>,
    /// Length of the load phase.
    pub duration: Duration,
    /// Seed of the field variation (each rank derives its own).
    pub seed: u64,
}

/// Send times of the load frames, for latency measurements in the same process.
#[derive(Debug)]
pub struct SendLog {
    base: Instant,
    /// Per rank: (sequence, nanoseconds since `base`) of every load frame.
    ranks: Vec<Mutex<Vec<(u64, u64)>>>,
    /// Per rank: its load phase is over, so its log is complete.
    finished: Vec<std::sync::atomic::AtomicBool>,
}

impl SendLog {
    /// An empty log for `ranks` ranks; times are measured from `base`.
    pub fn new(ranks: u64, base: Instant) -> Arc<Self> {
        Arc::new(SendLog {
            base,
            ranks: (0..ranks).map(|_| Mutex::new(Vec::new())).collect(),
            finished: (0..ranks).map(|_| Default::default()).collect(),
        })
    }

    /// The number of load frames rank index `rank` sent, once its load phase is over
    /// (`None` before): a harness can wait for exactly these without guessing a delay.
    pub fn finished(&self, rank: usize) -> Option<usize> {
        let done = self
            .finished
            .get(rank)?
            .load(std::sync::atomic::Ordering::Acquire);
        done.then(|| self.ranks[rank].lock().len())
    }

    fn record(&self, rank: usize, seq: u64) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.ranks[rank].lock().push((seq, ns));
    }

    /// Load frames handed to the socket of rank index `rank` so far.
    pub fn count(&self, rank: usize) -> usize {
        self.ranks.get(rank).map_or(0, |l| l.lock().len())
    }

    /// When frame `seq` of rank index `rank` was handed to its socket (ns since base).
    pub fn sent_at(&self, rank: usize, seq: u64) -> Option<u64> {
        let log = self.ranks.get(rank)?.lock();
        log.binary_search_by_key(&seq, |e| e.0)
            .ok()
            .map(|i| log[i].1)
    }
}

/// What one rank did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RankReport {
    /// The address it was bound to.
    pub address: String,
    /// Heartbeats sent during warm-up.
    pub warmup_sent: u64,
    /// Frames sent during the load phase.
    pub load_sent: u64,
    /// Sequence number of its first load frame.
    pub first_load_sequence: u64,
    /// Seconds its load phase lasted.
    pub load_seconds: f64,
}

/// What the whole run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Per rank, in rank order.
    pub ranks: Vec<RankReport>,
}

impl LoadReport {
    /// Load frames sent by all ranks.
    pub fn load_sent(&self) -> u64 {
        self.ranks.iter().map(|r| r.load_sent).sum()
    }

    /// Load frames per second actually offered (sum over ranks of sent / own duration).
    pub fn offered_rate(&self) -> f64 {
        self.ranks
            .iter()
            .filter(|r| r.load_seconds > 0.0)
            .map(|r| r.load_sent as f64 / r.load_seconds)
            .sum()
    }
}

/// Most frames a rank sends before yielding to the runtime (PUB sends never block).
const BURST: u64 = 64;

async fn run_rank(
    index: usize,
    rank: u64,
    config: Arc<LoadConfig>,
    mut phase: watch::Receiver<Phase>,
    log: Option<Arc<SendLog>>,
) -> Result<RankReport, String> {
    let address = rank_address(&config.endpoint, rank).map_err(|e| e.to_string())?;
    let mut publisher = FramePublisher::bind(&address)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    let mut model = FrameModel::new(&config.worker_id, rank, config.seed);
    let mut report = RankReport {
        address,
        ..Default::default()
    };
    let per_rank_rate = config.rate.map(|r| r / config.ranks as f64);
    loop {
        let current = *phase.borrow_and_update();
        match current {
            Phase::Warmup => {
                let _ = publisher.send(model.heartbeat()).await;
                report.warmup_sent += 1;
                let _ = tokio::time::timeout(Duration::from_millis(100), phase.changed()).await;
            }
            Phase::Quiet | Phase::Hold => {
                if phase.changed().await.is_err() {
                    break;
                }
            }
            Phase::Stop => break,
            Phase::Load => {
                report.first_load_sequence = publisher.next_sequence();
                let start = Instant::now();
                let end = start + config.duration;
                let mut sent = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end || *phase.borrow() != Phase::Load {
                        break;
                    }
                    let due = match per_rank_rate {
                        Some(r) => ((now - start).as_secs_f64() * r) as u64,
                        None => sent + BURST,
                    };
                    // Behind schedule, send at most a burst before yielding: the PUB's
                    // writer tasks share this runtime and must get to run, or its
                    // queue overflows and frames are dropped here, not by the consumer.
                    let burst_end = due.min(sent + BURST);
                    while sent < burst_end {
                        let seq = publisher.send(model.next_iteration()).await;
                        if let (Ok(seq), Some(log)) = (seq, &log) {
                            log.record(index, seq);
                        }
                        sent += 1;
                    }
                    if sent < due || per_rank_rate.is_none() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                }
                report.load_sent = sent;
                report.load_seconds = start.elapsed().as_secs_f64();
                if let Some(log) = &log {
                    log.finished[index].store(true, std::sync::atomic::Ordering::Release);
                }
                // Wait for the harness to move on (Hold or Stop), never resending.
                while *phase.borrow() == Phase::Load {
                    if phase.changed().await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    publisher.close().await;
    Ok(report)
}

/// Runs every rank until the phase turns to [`Phase::Stop`]; returns what each sent.
pub async fn run(
    config: LoadConfig,
    phase: watch::Receiver<Phase>,
    log: Option<Arc<SendLog>>,
) -> Result<LoadReport, String> {
    let config = Arc::new(config);
    let tasks: Vec<_> = (0..config.ranks)
        .enumerate()
        .map(|(i, r)| tokio::spawn(run_rank(i, r, config.clone(), phase.clone(), log.clone())))
        .collect();
    let mut report = LoadReport::default();
    for t in tasks {
        report.ranks.push(t.await.map_err(|e| e.to_string())??);
    }
    Ok(report)
}
