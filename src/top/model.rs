//! What `top` reads of `/v1/stream`'s events: the public JSON of
//! proto/schema/ranks.schema.json and stream.schema.json (only the fields it shows,
//! every one defaulted, so a newer exporter's additions never break it), and the rows
//! it derives from them, the same way the live page does.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A `snapshot` event: one rank, as `/v1/ranks` has it.
#[derive(Debug, Clone, Deserialize)]
pub struct RankSnapshot {
    /// Engine name.
    pub engine: String,
    /// The publisher's worker id.
    pub worker_id: String,
    /// Data-parallel rank.
    pub dp_rank: u64,
    /// busy, idle, stale or expired.
    pub state: String,
    /// Milliseconds since its latest frame.
    #[serde(default)]
    pub age_ms: u64,
    /// Its latest iteration frame.
    #[serde(default)]
    pub last: Option<Frame>,
    /// Totals since the exporter first saw the rank.
    #[serde(default)]
    pub counters: Counters,
    /// Per window (`10s`, `60s`...): its statistics, `null` without an iteration.
    #[serde(default)]
    pub windows: BTreeMap<String, Option<Window>>,
    /// Per window: its seconds per token against the engine's other ranks.
    #[serde(default)]
    pub straggler: BTreeMap<String, Option<Straggler>>,
}

/// The parts of an iteration frame `top` shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Frame {
    /// What ran in the iteration.
    pub scheduled_requests: Requests,
    /// What waited.
    pub queued_requests: Requests,
}

/// Request counts and tokens of one side of a frame.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Requests {
    /// Prefill requests.
    pub num_prefill_requests: f64,
    /// KV tokens the prefills read.
    pub sum_prefill_kv_tokens: f64,
    /// Decode requests.
    pub num_decode_requests: f64,
    /// KV context of the decodes.
    pub sum_decode_kv_tokens: f64,
}

/// A rank's running totals.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Frames accepted.
    pub frames: f64,
    /// Iteration frames.
    pub iterations: f64,
    /// Sum of the iterations' wall_time.
    pub wall_time_seconds: f64,
    /// Frames lost (sequence gaps).
    pub missed_frames: f64,
    /// Frames lost across a reconnect.
    pub reconnect_missed_frames: f64,
    /// Frames seen twice.
    pub duplicate_frames: f64,
    /// Publisher restarts seen.
    pub publisher_restarts: f64,
}

/// One window's statistics (the parts shown).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Window {
    /// Scheduled-side field statistics.
    pub scheduled_requests: WindowRequests,
    /// wall_time quantiles, seconds.
    pub wall_time_quantiles: Option<Quantiles>,
}

/// Scheduled-side statistics of a window (the one shown).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WindowRequests {
    /// Prompt tokens computed per iteration.
    pub sum_prefill_tokens: Stat,
}

/// A field's window statistics (the mean is shown).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Stat {
    /// Mean per iteration.
    pub mean: f64,
}

/// wall_time quantiles of a window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// A rank's straggler figures in a window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Straggler {
    /// Its seconds per token over the engine's median.
    pub ratio: Option<f64>,
}

/// `/v1/rank_loads`: the router view, read for the engines' own KV use (the stream's
/// snapshots do not carry the load snapshots).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RankLoads {
    /// One entry per rank.
    pub ranks: Vec<RankLoad>,
}

/// One rank of `/v1/rank_loads` (the part shown).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RankLoad {
    /// Engine name.
    pub engine: String,
    /// Worker id.
    pub worker_id: String,
    /// Dp rank.
    pub dp_rank: u64,
    /// Share of the KV pool in use from the engine's live load snapshot, if any.
    pub token_usage: Option<f64>,
}

/// An `engine_snapshot` event: one engine's aggregate (the balance is shown).
#[derive(Debug, Clone, Deserialize)]
pub struct EngineSnapshot {
    /// Engine name.
    pub engine: String,
    /// Per window: its work balance.
    #[serde(default)]
    pub balance: BTreeMap<String, Option<Balance>>,
}

/// An engine's balance over one window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Balance {
    /// Ranks counted.
    pub ranks: u64,
    /// Prompt tokens per iteration.
    pub prefill_tokens: Option<Measure>,
    /// Decode KV tokens per iteration.
    pub decode_kv_tokens: Option<Measure>,
    /// Queued requests.
    pub queued_requests: Option<Measure>,
}

/// One work measure's imbalance.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Measure {
    /// The heaviest rank's mean over the ranks' mean.
    pub ratio: f64,
    /// Which rank is heaviest.
    pub heaviest: Heaviest,
    /// Share of a lockstep iteration the others wait for the heaviest.
    pub lockstep_wait_ratio: Option<f64>,
}

/// The heaviest rank of a measure.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Heaviest {
    /// Its worker id.
    pub worker_id: String,
    /// Its dp rank.
    pub dp_rank: u64,
}

/// A `state` event: a rank's liveness changed.
#[derive(Debug, Clone, Deserialize)]
pub struct StateEvent {
    /// Engine name.
    pub engine: String,
    /// Worker id.
    pub worker_id: String,
    /// Dp rank.
    pub dp_rank: u64,
    /// The new state.
    pub to: String,
}

/// The shortest window's name of a window map (the freshest figures).
pub fn shortest<V>(windows: &BTreeMap<String, V>) -> Option<&str> {
    windows
        .keys()
        .min_by_key(|k| humantime::parse_duration(k).unwrap_or(Duration::MAX))
        .map(String::as_str)
}

/// How a row's rank is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Running iterations.
    Busy,
    /// Heartbeats only.
    Idle,
    /// Silent past `--stale-after`; its last figures are kept.
    Stale,
    /// Gone from the exporter (expired).
    Down,
}

impl State {
    /// The word shown.
    pub fn name(self) -> &'static str {
        match self {
            State::Busy => "busy",
            State::Idle => "idle",
            State::Stale => "stale",
            State::Down => "down",
        }
    }
}

/// One rank as shown.
#[derive(Debug, Clone)]
pub struct Row {
    /// Worker id.
    pub worker_id: String,
    /// Dp rank.
    pub dp_rank: u64,
    /// Its state.
    pub state: State,
    /// Milliseconds since its latest frame.
    pub age_ms: u64,
    /// Requests running in its latest iteration (0 when idle).
    pub running: f64,
    /// Requests queued.
    pub queued: f64,
    /// KV tokens in use (the work measure sorted on).
    pub kv: f64,
    /// Prompt tokens per iteration over the shortest window.
    pub prefill: Option<f64>,
    /// wall_time median and p99 over the shortest window, seconds.
    pub p50: Option<f64>,
    /// See `p50`.
    pub p99: Option<f64>,
    /// Frames per second over the last snapshot interval.
    pub fps: Option<f64>,
    /// Straggler ratio over the shortest window.
    pub straggler: Option<f64>,
    /// The engine's own KV share in use, from its load snapshot.
    pub usage: Option<f64>,
    /// Mean wall_time of each snapshot interval, oldest first.
    pub history: Vec<f64>,
}

/// How rows are ordered inside their engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// worker id, then dp rank.
    Rank,
    /// KV tokens in use, most first.
    Work,
    /// wall_time p50, slowest first.
    Wall,
    /// Queued requests, most first.
    Queue,
}

impl SortKey {
    /// The word shown.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Rank => "rank",
            SortKey::Work => "work",
            SortKey::Wall => "wall time",
            SortKey::Queue => "queue",
        }
    }
}
