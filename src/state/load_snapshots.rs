//! The engines' own load snapshots (SGLang's `LoadSnapshot`, one per dp rank, read
//! from the engine's `/dev/shm` file by `source::load_snapshot`): the latest read of
//! every file, each rank's state by the age of its snapshot's `timestamp`, and the
//! per-(engine, dp_rank) view that `/v1/loads`, `/metrics` and the FPM joins read.
//!
//! A file whose engine died stays in `/dev/shm` and its snapshots stop changing; the
//! `timestamp` the writer stamps is what tells, so a rank is stale after
//! `--stale-after` without a new snapshot and its file expires after `--expire-after`,
//! like an FPM rank. Stale ranks are shown as such and never served as live load.

use crate::wire::load_snapshot::LoadSnapshot;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The state of one rank's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Written within `--stale-after`.
    Live,
    /// Older than `--stale-after`: the engine stopped writing (or died).
    Stale,
    /// The writer's placeholder (timestamp 0): the scheduler has not published yet.
    Pending,
}

impl SnapshotState {
    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Live => "live",
            SnapshotState::Stale => "stale",
            SnapshotState::Pending => "pending",
        }
    }
}

/// One file as last read: where, which engine instance, and its slots.
#[derive(Debug, Clone)]
pub struct FileSnapshots {
    /// Its path.
    pub path: Arc<str>,
    /// The engine instance its name carries (`sglang_loads_<instance>_<digest>.shm`).
    pub instance: Arc<str>,
    /// `dp_size` of its header.
    pub dp_size: u16,
    /// Slot r's snapshot, if it holds one that decoded.
    pub slots: Vec<Option<Arc<LoadSnapshot>>>,
}

/// One rank's snapshot in a view.
#[derive(Debug, Clone, PartialEq)]
pub struct RankSnapshot {
    /// The slot index (SGLang's `dp_rank`).
    pub dp_rank: u64,
    /// The snapshot.
    pub snapshot: Arc<LoadSnapshot>,
    /// Its state now.
    pub state: SnapshotState,
    /// Seconds since its `timestamp` (0 when the writer's clock is ahead).
    pub age_secs: f64,
    /// The file it came from.
    pub path: Arc<str>,
}

/// The snapshots of every engine that has a `load_snapshot` source.
#[derive(Debug)]
pub struct SnapshotStore {
    stale_after: Duration,
    expire_after: Duration,
    /// Per engine index, `None` for an engine without a snapshot source.
    engines: Vec<Option<EngineSnapshots>>,
}

#[derive(Debug, Default)]
struct EngineSnapshots {
    files: Mutex<Arc<Vec<FileSnapshots>>>,
    expired_files: AtomicU64,
}

impl SnapshotStore {
    /// A store for `engines` engines, of which those in `with_source` read snapshots.
    pub fn new(
        engines: usize,
        with_source: &[usize],
        stale_after: Duration,
        expire_after: Duration,
    ) -> Self {
        SnapshotStore {
            stale_after,
            expire_after,
            engines: (0..engines)
                .map(|i| with_source.contains(&i).then(EngineSnapshots::default))
                .collect(),
        }
    }

    /// Whether the engine reads snapshots.
    pub fn has_source(&self, engine: usize) -> bool {
        self.engines.get(engine).is_some_and(|e| e.is_some())
    }

    /// Engines that read snapshots.
    pub fn engines_with_source(&self) -> impl Iterator<Item = usize> + '_ {
        self.engines
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
    }

    /// The state of a snapshot written at `timestamp`, at `now_unix` seconds.
    pub fn state_of(&self, timestamp: f64, now_unix: f64) -> SnapshotState {
        if timestamp <= 0.0 {
            SnapshotState::Pending
        } else if now_unix - timestamp >= self.stale_after.as_secs_f64() {
            SnapshotState::Stale
        } else {
            SnapshotState::Live
        }
    }

    /// `--expire-after`.
    pub fn expire_after(&self) -> Duration {
        self.expire_after
    }

    /// Whether a file whose newest snapshot was written at `newest` has expired.
    pub fn expired(&self, newest: f64, now_unix: f64) -> bool {
        now_unix - newest >= self.expire_after.as_secs_f64()
    }

    /// Replaces the engine's files with a fresh read; `expired` files were dropped.
    pub fn replace(&self, engine: usize, files: Vec<FileSnapshots>, expired: u64) {
        if let Some(Some(e)) = self.engines.get(engine) {
            *e.files.lock() = Arc::new(files);
            e.expired_files.fetch_add(expired, Relaxed);
        }
    }

    /// The engine's files as last read.
    pub fn files(&self, engine: usize) -> Arc<Vec<FileSnapshots>> {
        match self.engines.get(engine) {
            Some(Some(e)) => e.files.lock().clone(),
            _ => Arc::default(),
        }
    }

    /// Files of the engine that expired since the start.
    pub fn expired_files(&self, engine: usize) -> u64 {
        match self.engines.get(engine) {
            Some(Some(e)) => e.expired_files.load(Relaxed),
            _ => 0,
        }
    }

    /// One snapshot per dp rank of the engine, in dp_rank order: of the files that
    /// hold that rank, the newest `timestamp` (a restarted engine's new file wins over
    /// the dead one's until that expires).
    pub fn ranks(&self, engine: usize, now_unix: f64) -> Vec<RankSnapshot> {
        let files = self.files(engine);
        let mut best: std::collections::BTreeMap<u64, RankSnapshot> = Default::default();
        for f in files.iter() {
            for (r, slot) in f.slots.iter().enumerate() {
                let Some(snap) = slot else { continue };
                let ts = snap.timestamp();
                let newer = best
                    .get(&(r as u64))
                    .is_none_or(|b| ts > b.snapshot.timestamp());
                if newer {
                    best.insert(
                        r as u64,
                        RankSnapshot {
                            dp_rank: r as u64,
                            snapshot: snap.clone(),
                            state: self.state_of(ts, now_unix),
                            age_secs: (now_unix - ts).max(0.0),
                            path: f.path.clone(),
                        },
                    );
                }
            }
        }
        best.into_values().collect()
    }

    /// The live snapshot of (engine, dp_rank), if there is one.
    pub fn live(&self, engine: usize, dp_rank: u64, now_unix: f64) -> Option<RankSnapshot> {
        self.ranks(engine, now_unix)
            .into_iter()
            .find(|r| r.dp_rank == dp_rank && r.state == SnapshotState::Live)
    }
}

/// Now, as Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// KV occupancy as the engine sees it, from one snapshot: what FPM cannot give a router.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KvCapacity {
    /// `token_usage`: the share of the KV pool in use, as the scheduler computes it.
    pub token_usage: f64,
    /// `num_used_tokens`: KV tokens in use.
    pub num_used_tokens: u64,
    /// `max_total_num_tokens`: the KV pool's size in tokens.
    pub max_total_num_tokens: u64,
}

impl RankSnapshot {
    /// The snapshot's KV occupancy.
    pub fn kv(&self) -> KvCapacity {
        use crate::wire::load_snapshot::{core, Scalar};
        let int = |i: usize| match &self.snapshot.core[i] {
            Scalar::Int(v) => u64::try_from(*v).unwrap_or(0),
            _ => 0,
        };
        KvCapacity {
            token_usage: self.snapshot.number(core::TOKEN_USAGE),
            num_used_tokens: int(core::NUM_USED_TOKENS),
            max_total_num_tokens: int(core::MAX_TOTAL_NUM_TOKENS),
        }
    }
}

/// `{state, age_ms, path, load}`: the rank's state, its age, its file and the
/// snapshot as SGLang's `LoadSnapshot.to_dict()` (every present section).
impl Serialize for RankSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::wire::load_snapshot::{Entry, Include};
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("state", &self.state)?;
        m.serialize_entry("age_ms", &((self.age_secs * 1e3) as u64))?;
        m.serialize_entry("path", &*self.path)?;
        let entry = Entry {
            snapshot: &self.snapshot,
            include: Include::ALL,
        };
        m.serialize_entry("load", &entry)?;
        m.end()
    }
}

/// Every engine's snapshot per dp rank at one moment, for the FPM views to join on
/// (engine, dp_rank). An engine's `load_snapshot` is one SGLang instance: its dp ranks
/// are the FPM ranks of that engine with the same `dp_rank`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotJoin {
    with_source: Vec<bool>,
    ranks: std::collections::HashMap<(usize, u64), RankSnapshot>,
}

impl SnapshotJoin {
    /// Whether the engine reads snapshots (its ranks carry a `load_snapshot` entry).
    pub fn has_source(&self, engine: usize) -> bool {
        self.with_source.get(engine).copied().unwrap_or(false)
    }

    /// The rank's snapshot, whatever its state.
    pub fn get(&self, engine: usize, dp_rank: u64) -> Option<&RankSnapshot> {
        self.ranks.get(&(engine, dp_rank))
    }

    /// The rank's snapshot while it is live: what a router may act on.
    pub fn live(&self, engine: usize, dp_rank: u64) -> Option<&RankSnapshot> {
        self.get(engine, dp_rank)
            .filter(|r| r.state == SnapshotState::Live)
    }
}

impl SnapshotStore {
    /// Every engine's ranks now, keyed for the join.
    pub fn join(&self, now_unix: f64) -> SnapshotJoin {
        let mut out = SnapshotJoin {
            with_source: self.engines.iter().map(Option::is_some).collect(),
            ranks: Default::default(),
        };
        for e in self.engines_with_source() {
            for r in self.ranks(e, now_unix) {
                out.ranks.insert((e, r.dp_rank), r);
            }
        }
        out
    }
}
