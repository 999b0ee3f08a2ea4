//! Per-rank state and rolling statistics, and the registry that holds every rank.
//!
//! Ingest tasks fold frames into [`RankState`]s (one mutex per rank, so ranks never
//! wait on each other); a sweeper ages ranks into stale and expired; sinks read
//! consistent [`Snapshot`]s.

pub mod endpoint;
pub mod engine_view;
pub mod engines;
pub mod fields;
pub mod labels;
pub mod load;
pub mod model;
pub mod nnls;
pub mod quantiles;
pub mod rank;
pub mod sequence;
pub mod views;
pub mod welford;
pub mod window;

use crate::wire::ForwardPassMetrics;
use endpoint::EndpointStats;
use parking_lot::{Mutex, RwLock};
use rank::{Counters, LastFrame, Liveness, RankKey, RankState, Transition};
use sequence::SeqEvent;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use window::FrameMoments;

/// Tunables of the state stage.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Rolling-window lengths in whole seconds (default 10 and 60).
    pub windows: Vec<u64>,
    /// Silence after which a rank is stale (default 3 s: three missed heartbeats).
    pub stale_after: Duration,
    /// Silence after which a rank expires and its series disappear (default 5 min).
    pub expire_after: Duration,
    /// Most ranks tracked at once; frames of further ranks are refused and counted.
    pub max_ranks: usize,
    /// Cap on worker_id bytes kept as a label value.
    pub max_label_bytes: usize,
    /// Capacity of the event stream's ring buffer (events a slow client may fall behind).
    pub stream_buffer: usize,
    /// Which per-rank families `/metrics` writes, per engine (`--rank-detail`).
    pub rank_detail: crate::sink::prometheus::detail::RankDetails,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            windows: vec![10, 60],
            stale_after: Duration::from_secs(3),
            expire_after: Duration::from_secs(300),
            max_ranks: 4096,
            max_label_bytes: labels::DEFAULT_MAX_LABEL_BYTES,
            stream_buffer: 16_384,
            rank_detail: Default::default(),
        }
    }
}

/// Cumulative totals an engine keeps from its expired ranks.
#[derive(Default)]
struct Retired {
    iterations: AtomicU64,
    wall_time_ns: AtomicU64,
}

/// One configured engine: a name and the labels every one of its series carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineInfo {
    /// The `engine` label value.
    pub name: String,
    /// Extra labels (e.g. model, role), in configuration order.
    pub labels: Vec<(String, String)>,
}

/// Reads the wall clock as Unix nanoseconds; injectable so tests can step it.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system wall clock (0 before 1970, which no real clock reports).
pub fn system_wall_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

/// A point in time on both clocks: monotonic for ageing, wall clock for reporting.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic instant.
    pub instant: Instant,
    /// Whole seconds since the registry's epoch (indexes the window rings).
    pub sec: u64,
    /// Wall-clock Unix nanoseconds, read when the point was taken (so it follows
    /// clock corrections; nothing ages or windows by it).
    pub unix_ns: u64,
}

/// An event for the stream: a decoded frame or a liveness change.
#[derive(Debug)]
pub struct Event {
    /// Which rank it concerns.
    pub key: RankKey,
    /// What happened.
    pub kind: EventKind,
    /// The JSON form, rendered once by the first stream client that needs it.
    pub json: OnceLock<bytes::Bytes>,
}

/// The payload of an [`Event`].
#[derive(Debug)]
pub enum EventKind {
    /// A frame was accepted.
    Frame {
        /// Wire sequence number.
        sequence: u64,
        /// Receive time, Unix ns.
        received_at_ns: u64,
        /// The decoded frame.
        metrics: ForwardPassMetrics,
    },
    /// The rank's liveness changed.
    State {
        /// Previous state.
        from: Liveness,
        /// New state.
        to: Liveness,
        /// When, Unix ns.
        at_ns: u64,
    },
}

/// A shared handle to one rank's state.
pub type RankHandle = Arc<Mutex<RankState>>;

/// Remembers the rank an ingest task wrote to last, so the steady state (one rank per
/// endpoint) never touches the registry map or hashes a string.
#[derive(Default)]
pub struct RankCache {
    hit: Option<(String, u64, RankHandle)>,
}

/// Every rank of every engine, plus the endpoints that feed them.
pub struct Registry {
    /// Tunables.
    pub config: StateConfig,
    /// Configured engines and those sources added since, indexed by [`RankKey::engine`].
    pub engines: engines::Engines,
    epoch: Instant,
    wall_clock: WallClock,
    ranks: RwLock<HashMap<RankKey, RankHandle>>,
    endpoints: RwLock<Vec<Arc<EndpointStats>>>,
    events: broadcast::Sender<Arc<Event>>,
    /// Frames refused because [`StateConfig::max_ranks`] ranks were already tracked.
    pub refused_frames: AtomicU64,
    /// Ranks expired so far, per engine (one slot per possible engine).
    pub expired: Vec<AtomicU64>,
    /// Per engine, the cumulative totals of its expired ranks (written under the map's
    /// write lock, read under its read lock, so a snapshot counts each rank once).
    retired: Vec<Retired>,
    /// The NATS client's counters, set when `--nats` or `--nats-publish` is on.
    pub nats: OnceLock<Arc<crate::source::nats::NatsStats>>,
    /// Requests the HTTP side turned away or cut off.
    pub http: HttpStats,
}

/// Counters of the HTTP side's limits, reported on `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// `/metrics` requests answered 503 because `--max-scrapes` renders were running.
    pub scrapes_rejected: AtomicU64,
    /// Stream snapshots skipped because the snapshot budget was busy.
    pub snapshots_skipped: AtomicU64,
    /// Connections dropped because a response write made no progress in time.
    pub write_timeouts: AtomicU64,
}

impl Registry {
    /// An empty registry for the given engines.
    pub fn new(config: StateConfig, engines: Vec<EngineInfo>) -> Arc<Self> {
        Self::with_wall_clock(config, engines, system_wall_clock())
    }

    /// An empty registry that reads wall time from `wall_clock`.
    pub fn with_wall_clock(
        config: StateConfig,
        engines: Vec<EngineInfo>,
        wall_clock: WallClock,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(config.stream_buffer.max(16));
        let engines = engines::Engines::new(engines);
        Arc::new(Registry {
            expired: (0..engines.capacity()).map(|_| AtomicU64::new(0)).collect(),
            retired: (0..engines.capacity())
                .map(|_| Retired::default())
                .collect(),
            config,
            engines,
            nats: OnceLock::new(),
            epoch: Instant::now(),
            wall_clock,
            ranks: RwLock::new(HashMap::new()),
            endpoints: RwLock::new(Vec::new()),
            events,
            refused_frames: AtomicU64::new(0),
            http: HttpStats::default(),
        })
    }

    /// The current time on both clocks.
    pub fn now(&self) -> Now {
        let instant = Instant::now();
        Now {
            instant,
            sec: instant.saturating_duration_since(self.epoch).as_secs(),
            unix_ns: (self.wall_clock)(),
        }
    }

    /// `instant` on both clocks (the wall time is the current one, shifted by how far
    /// `instant` is from now).
    pub fn at(&self, instant: Instant) -> Now {
        let now = self.now();
        let unix_ns = if instant >= now.instant {
            now.unix_ns
                .saturating_add((instant - now.instant).as_nanos() as u64)
        } else {
            now.unix_ns
                .saturating_sub((now.instant - instant).as_nanos() as u64)
        };
        Now {
            instant,
            sec: instant.saturating_duration_since(self.epoch).as_secs(),
            unix_ns,
        }
    }

    /// Registers an endpoint and returns its shared stats.
    pub fn add_endpoint(
        &self,
        engine: usize,
        expected_rank: u64,
        address: &str,
    ) -> Arc<EndpointStats> {
        let stats = Arc::new(EndpointStats::new(engine, expected_rank, address));
        self.endpoints.write().push(stats.clone());
        stats
    }

    /// All registered endpoints.
    pub fn endpoints(&self) -> Vec<Arc<EndpointStats>> {
        self.endpoints.read().clone()
    }

    /// A new receiver of the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// How many stream receivers exist.
    pub fn stream_clients(&self) -> usize {
        self.events.receiver_count()
    }

    /// Number of tracked ranks.
    pub fn rank_count(&self) -> usize {
        self.ranks.read().len()
    }

    fn emit(&self, key: &RankKey, kind: EventKind) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(Event {
                key: key.clone(),
                kind,
                json: OnceLock::new(),
            }));
        }
    }

    fn log_transition(&self, key: &RankKey, (from, to): Transition, now: &Now) {
        let engine = &self.engines[key.engine].name;
        let (worker_id, dp_rank) = (&*key.worker_id, key.dp_rank);
        let (from_s, to_s) = (from.as_str(), to.as_str());
        // Busy <-> idle flips with every idle spell: debug. Losing or regaining a rank
        // is what an operator needs to see.
        match (from, to) {
            (_, Liveness::Stale | Liveness::Expired) => {
                tracing::warn!(
                    engine,
                    worker_id,
                    dp_rank,
                    from = from_s,
                    to = to_s,
                    "rank went silent"
                )
            }
            (Liveness::Stale, _) => {
                tracing::info!(
                    engine,
                    worker_id,
                    dp_rank,
                    from = from_s,
                    to = to_s,
                    "rank is back"
                )
            }
            _ => tracing::debug!(
                engine,
                worker_id,
                dp_rank,
                from = from_s,
                to = to_s,
                "rank state changed"
            ),
        }
        self.emit(
            key,
            EventKind::State {
                from,
                to,
                at_ns: now.unix_ns,
            },
        );
    }

    /// Finds or creates the rank a frame belongs to; `None` when the rank cap refuses it.
    fn rank_for(
        &self,
        cache: &mut RankCache,
        engine: usize,
        endpoint: &Arc<str>,
        metrics: &ForwardPassMetrics,
        now: &Now,
    ) -> Option<RankHandle> {
        if let Some((wid, rank, handle)) = &cache.hit {
            if *rank == metrics.dp_rank && *wid == metrics.worker_id && !handle.lock().removed {
                return Some(handle.clone());
            }
        }
        let key = RankKey {
            engine,
            worker_id: labels::cap_label(&metrics.worker_id, self.config.max_label_bytes).into(),
            dp_rank: metrics.dp_rank,
        };
        let existing = self.ranks.read().get(&key).cloned();
        let handle = match existing {
            Some(h) => h,
            None => {
                let mut map = self.ranks.write();
                if let Some(h) = map.get(&key) {
                    h.clone()
                } else {
                    if map.len() >= self.config.max_ranks {
                        return None;
                    }
                    let state =
                        RankState::new(key.clone(), endpoint.clone(), &self.config.windows, now);
                    let h = Arc::new(Mutex::new(state));
                    map.insert(key.clone(), h.clone());
                    tracing::info!(
                        engine = %self.engines[engine].name,
                        worker_id = %key.worker_id,
                        dp_rank = key.dp_rank,
                        endpoint = %endpoint,
                        "new rank"
                    );
                    h
                }
            }
        };
        cache.hit = Some((metrics.worker_id.clone(), metrics.dp_rank, handle.clone()));
        Some(handle)
    }

    /// Folds one accepted frame into its rank. Returns false if the rank cap refused it.
    // The arguments are the frame and where it came from; bundling them would only
    // move the same fields into a struct built once per frame.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest(
        &self,
        cache: &mut RankCache,
        engine: usize,
        endpoint: &Arc<str>,
        sequence: u64,
        order: SeqEvent,
        metrics: ForwardPassMetrics,
        now: &Now,
    ) -> bool {
        // Steady state: the cached rank is checked and updated under one lock.
        if let Some((wid, rank, handle)) = &cache.hit {
            if *rank == metrics.dp_rank && *wid == metrics.worker_id {
                let mut rank = handle.lock();
                if !rank.removed {
                    let t = rank.apply(&metrics, sequence, order, now);
                    let key =
                        (t.is_some() || self.events.receiver_count() > 0).then(|| rank.key.clone());
                    drop(rank);
                    self.after_apply(key, t, sequence, metrics, now);
                    return true;
                }
            }
        }
        let Some(handle) = self.rank_for(cache, engine, endpoint, &metrics, now) else {
            self.refused_frames.fetch_add(1, Relaxed);
            return false;
        };
        let (key, transition) = {
            let mut rank = handle.lock();
            let t = rank.apply(&metrics, sequence, order, now);
            let key = (t.is_some() || self.events.receiver_count() > 0).then(|| rank.key.clone());
            (key, t)
        };
        self.after_apply(key, transition, sequence, metrics, now);
        true
    }

    /// Logs a transition and feeds the event stream; `key` is set when either needs it.
    fn after_apply(
        &self,
        key: Option<RankKey>,
        transition: Option<Transition>,
        sequence: u64,
        metrics: ForwardPassMetrics,
        now: &Now,
    ) {
        let Some(key) = key else { return };
        if let Some(t) = transition {
            self.log_transition(&key, t, now);
        }
        if self.events.receiver_count() > 0 {
            self.emit(
                &key,
                EventKind::Frame {
                    sequence,
                    received_at_ns: now.unix_ns,
                    metrics,
                },
            );
        }
    }

    /// Ages every rank: marks silent ones stale and removes expired ones.
    pub fn sweep(&self, now: &Now) {
        let expired = self.mark_stale(now);
        if !expired.is_empty() {
            self.remove_expired(expired, now);
        }
    }

    /// Under the read lock: marks silent ranks stale, returns those silent long enough
    /// to expire.
    fn mark_stale(&self, now: &Now) -> Vec<RankKey> {
        let mut expired = Vec::new();
        let map = self.ranks.read();
        for (key, handle) in map.iter() {
            let mut rank = handle.lock();
            let silent = now.instant.saturating_duration_since(rank.last_frame_at);
            if silent >= self.config.expire_after {
                expired.push(key.clone());
            } else if silent >= self.config.stale_after {
                if let Some(t) = rank.transition(Liveness::Stale) {
                    drop(rank);
                    self.log_transition(key, t, now);
                }
            }
        }
        expired
    }

    /// Under the write lock: removes the candidates that are still silent. A frame may
    /// have arrived since [`Self::mark_stale`] looked; that rank lives on.
    fn remove_expired(&self, candidates: Vec<RankKey>, now: &Now) {
        let mut map = self.ranks.write();
        for key in candidates {
            let Some(handle) = map.get(&key) else {
                continue;
            };
            let mut rank = handle.lock();
            if now.instant.saturating_duration_since(rank.last_frame_at) < self.config.expire_after
            {
                continue;
            }
            rank.removed = true;
            let from = rank.liveness;
            let retired = &self.retired[key.engine];
            retired
                .iterations
                .fetch_add(rank.counters.iterations, Relaxed);
            retired
                .wall_time_ns
                .fetch_add(rank.counters.wall_time_ns, Relaxed);
            drop(rank);
            map.remove(&key);
            self.expired[key.engine].fetch_add(1, Relaxed);
            self.log_transition(&key, (from, Liveness::Expired), now);
        }
    }

    /// A consistent view of the ranks that pass `filter`, with window statistics.
    pub fn snapshot(&self, filter: &RankFilter) -> Snapshot {
        let now = self.now();
        let nwin = self.config.windows.len();
        // Handles first: a rank's engine is registered before the rank, so every
        // handle's engine index is below the length read after them.
        let (handles, retired): (Vec<RankHandle>, Vec<(u64, u64)>) = {
            let map = self.ranks.read();
            let handles: Vec<RankHandle> = map
                .iter()
                .filter(|(k, _)| filter.matches(self, k))
                .map(|(_, h)| h.clone())
                .collect();
            // Expired ranks' totals as of the ranks listed here: a rank removed from now
            // on is still in the list (its counters frozen), and not in these totals.
            let retired = if filter.worker_id.is_none() && filter.dp_rank.is_none() {
                (0..self.engines.len())
                    .map(|e| {
                        let r = &self.retired[e];
                        (r.iterations.load(Relaxed), r.wall_time_ns.load(Relaxed))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (handles, retired)
        };
        let n_engines = self.engines.len();
        let mut engines: Vec<EngineSnapshot> = (0..n_engines)
            .map(|engine| EngineSnapshot {
                engine,
                busy: 0,
                idle: 0,
                stale: 0,
                expired_total: self.expired[engine].load(Relaxed),
                windows: self.empty_windows(),
                model: model::ModelSums::default(),
                iterations_total: retired.get(engine).map_or(0, |r| r.0),
                wall_time_ns_total: retired.get(engine).map_or(0, |r| r.1),
            })
            .collect();
        let mut engine_hists: Vec<Vec<hdrhistogram::Histogram<u32>>> = (0..n_engines)
            .map(|_| (0..nwin).map(|_| quantiles::new_histogram()).collect())
            .collect();
        let mut scratch = quantiles::new_histogram();
        let mut ranks = Vec::with_capacity(handles.len());
        for handle in handles {
            let rank = handle.lock();
            let eng = &mut engines[rank.key.engine];
            eng.iterations_total = eng
                .iterations_total
                .saturating_add(rank.counters.iterations);
            eng.wall_time_ns_total = eng
                .wall_time_ns_total
                .saturating_add(rank.counters.wall_time_ns);
            match rank.liveness {
                Liveness::Busy => eng.busy += 1,
                Liveness::Idle => eng.idle += 1,
                _ => eng.stale += 1,
            }
            let mut windows = self.empty_windows();
            for (i, w) in windows.iter_mut().enumerate() {
                rank.merge_window_into(now.sec, w.secs, &mut w.moments);
                eng.windows[i].moments.merge(&w.moments);
                scratch.reset();
                rank.merge_quantiles_into(now.sec, i, &mut scratch);
                w.wall_time_quantiles = quantiles::quantiles_of(&scratch);
                let _ = engine_hists[rank.key.engine][i].add(&scratch);
            }
            let mut model = model::ModelSums::default();
            rank.model.merge_into(now.sec, &mut model);
            eng.model.merge(&model);
            ranks.push(RankSnapshot {
                key: rank.key.clone(),
                endpoint: rank.endpoint.clone(),
                liveness: rank.liveness,
                last_frame_unix_ns: rank.last_frame_unix_ns,
                age_ms: now
                    .instant
                    .saturating_duration_since(rank.last_frame_at)
                    .as_millis() as u64,
                last: rank.last.clone(),
                counters: rank.counters,
                windows,
                model,
            });
        }
        for (eng, hists) in engines.iter_mut().zip(&engine_hists) {
            for (w, h) in eng.windows.iter_mut().zip(hists) {
                w.wall_time_quantiles = quantiles::quantiles_of(h);
            }
        }
        ranks.sort_by(|a, b| a.key.cmp(&b.key));
        engines.retain(|e| {
            let name = &self.engines[e.engine].name;
            filter.engine.as_deref().is_none_or(|n| name == n)
        });
        Snapshot {
            at_unix_ns: now.unix_ns,
            ranks,
            engines,
        }
    }

    fn empty_windows(&self) -> Vec<WindowSnapshot> {
        self.config
            .windows
            .iter()
            .map(|&secs| WindowSnapshot {
                secs,
                moments: FrameMoments::default(),
                wall_time_quantiles: [0.0; 4],
            })
            .collect()
    }
}

/// Which ranks a snapshot or stream covers (all of them by default).
#[derive(Debug, Clone, Default)]
pub struct RankFilter {
    /// Only this engine (by name).
    pub engine: Option<String>,
    /// Only this worker_id.
    pub worker_id: Option<String>,
    /// Only this dp_rank.
    pub dp_rank: Option<u64>,
}

impl RankFilter {
    /// Whether the rank `key` passes.
    pub fn matches(&self, registry: &Registry, key: &RankKey) -> bool {
        self.engine
            .as_deref()
            .is_none_or(|e| registry.engines[key.engine].name == e)
            && self
                .worker_id
                .as_deref()
                .is_none_or(|w| &*key.worker_id == w)
            && self.dp_rank.is_none_or(|r| key.dp_rank == r)
    }
}

/// Statistics of one window.
#[derive(Debug, Clone)]
pub struct WindowSnapshot {
    /// Window length in seconds.
    pub secs: u64,
    /// Merged moments of every field.
    pub moments: FrameMoments,
    /// wall_time p50, p90, p99, max in seconds.
    pub wall_time_quantiles: [f64; 4],
}

/// One rank as the sinks see it.
#[derive(Debug, Clone)]
pub struct RankSnapshot {
    /// Identity.
    pub key: RankKey,
    /// Endpoint address.
    pub endpoint: Arc<str>,
    /// Liveness.
    pub liveness: Liveness,
    /// Latest frame of any kind, Unix ns.
    pub last_frame_unix_ns: u64,
    /// Milliseconds since the latest frame of any kind.
    pub age_ms: u64,
    /// Latest iteration frame.
    pub last: Option<LastFrame>,
    /// Cumulative counters.
    pub counters: Counters,
    /// Window statistics, in configured order.
    pub windows: Vec<WindowSnapshot>,
    /// Performance-model sums over the longest window.
    pub model: model::ModelSums,
}

/// One engine's all-ranks aggregate.
#[derive(Debug, Clone)]
pub struct EngineSnapshot {
    /// Engine index.
    pub engine: usize,
    /// Ranks busy.
    pub busy: u64,
    /// Ranks idle.
    pub idle: u64,
    /// Ranks stale.
    pub stale: u64,
    /// Ranks expired since start.
    pub expired_total: u64,
    /// Merged window statistics of all its ranks.
    pub windows: Vec<WindowSnapshot>,
    /// Performance-model sums of all its ranks over the longest window.
    pub model: model::ModelSums,
    /// Iterations of all its ranks since the exporter started, expired ranks included
    /// (only the filtered ranks when the snapshot is filtered by worker or rank).
    pub iterations_total: u64,
    /// Their wall_time sum, in nanoseconds (same scope).
    pub wall_time_ns_total: u64,
}

/// Everything the sinks need, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When, Unix ns.
    pub at_unix_ns: u64,
    /// Ranks, sorted by key.
    pub ranks: Vec<RankSnapshot>,
    /// Engines, in configured order.
    pub engines: Vec<EngineSnapshot>,
}

#[cfg(test)]
mod registry_tests;
