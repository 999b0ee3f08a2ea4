//! The registry: every rank of every engine in one map, and the ingest path that folds
//! a frame into its rank.

use super::engines;
use super::labels;
use super::rank::{Liveness, RankKey, RankState, Transition};
use super::sequence::SeqEvent;
use super::{system_wall_clock, EngineInfo, Event, EventKind, Now, StateConfig, WallClock};
use crate::wire::ForwardPassMetrics;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// Cumulative totals an engine keeps from its expired ranks.
#[derive(Default)]
pub(super) struct Retired {
    pub(super) iterations: AtomicU64,
    pub(super) wall_time_ns: AtomicU64,
}

/// A shared handle to one rank's state.
pub type RankHandle = Arc<Mutex<RankState>>;

/// Remembers the rank an ingest task wrote to last, so the steady state (one rank per
/// endpoint) never touches the registry map or hashes a string.
#[derive(Default)]
pub struct RankCache {
    hit: Option<(String, u64, RankHandle)>,
}

/// Every rank of every engine.
pub struct Registry {
    /// Tunables.
    pub config: StateConfig,
    /// Configured engines and those sources added since, indexed by [`RankKey::engine`].
    pub engines: engines::Engines,
    pub(super) epoch: Instant,
    pub(super) wall_clock: WallClock,
    pub(super) ranks: RwLock<HashMap<RankKey, RankHandle>>,
    pub(super) events: broadcast::Sender<Arc<Event>>,
    /// Frames refused because [`StateConfig::max_ranks`] ranks were already tracked.
    pub refused_frames: AtomicU64,
    /// Ranks expired so far, per engine (one slot per possible engine).
    pub expired: Vec<AtomicU64>,
    /// Per engine, the cumulative totals of its expired ranks (written under the map's
    /// write lock, read under its read lock, so a snapshot counts each rank once).
    pub(super) retired: Vec<Retired>,
    /// Sources that hold received frames between rounds ([`crate::state::intake`]).
    pub(super) intakes: RwLock<Vec<super::intake::CatchUp>>,
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
        let engines = engines::Engines::with_room(engines, config.dynamic_engines);
        Arc::new(Registry {
            expired: (0..engines.capacity()).map(|_| AtomicU64::new(0)).collect(),
            retired: (0..engines.capacity())
                .map(|_| Retired::default())
                .collect(),
            config,
            engines,
            epoch: Instant::now(),
            wall_clock,
            ranks: RwLock::new(HashMap::new()),
            events,
            refused_frames: AtomicU64::new(0),
            intakes: RwLock::new(Vec::new()),
        })
    }

    /// A new receiver of the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// How many receivers the event stream has (the stream hub while it has clients,
    /// the recorder, the NATS relay); with none, ingest builds no events.
    pub fn subscribers(&self) -> usize {
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
            }));
        }
    }

    pub(super) fn log_transition(&self, key: &RankKey, (from, to): Transition, now: &Now) {
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
    /// Not the engines marked here, by index (`/metrics` leaving out what edges serve).
    pub skip_engines: Vec<bool>,
}

impl RankFilter {
    /// Whether engine `engine` is left out whole.
    pub fn skips(&self, engine: usize) -> bool {
        self.skip_engines.get(engine).copied().unwrap_or(false)
    }

    /// Whether the rank `key` passes.
    pub fn matches(&self, registry: &Registry, key: &RankKey) -> bool {
        !self.skips(key.engine)
            && self
                .engine
                .as_deref()
                .is_none_or(|e| registry.engines[key.engine].name == e)
            && self
                .worker_id
                .as_deref()
                .is_none_or(|w| &*key.worker_id == w)
            && self.dp_rank.is_none_or(|r| key.dp_rank == r)
    }
}
