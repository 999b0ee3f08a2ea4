//! JSON pieces that more than one resource renders, kept in one place so that no sink
//! imports another: the rank (in `/v1/ranks` and the stream's snapshot events), the
//! model fits (in `/v1/ranks` and `/v1/model`) and the loads document (`/v1/rank_loads` and
//! the NATS KV bucket). Field names and nesting follow the wire
//! (`scheduled_requests.sum_prefill_tokens`), so a consumer that knows the FPM schema
//! knows this output. Schemas: `proto/schema/`.

use crate::state::fields::{FIELDS, FIELD_COUNT};
use crate::state::imbalance::{Balance, Straggler, MEASURES};
use crate::state::load_snapshots::{KvCapacity, RankSnapshot as JoinedSnapshot, SnapshotJoin};
use crate::state::model::{Fit, ModelKind, ModelSums, TERMS};
use crate::state::rank::{Counters, Liveness};
use crate::state::views::{LoadsSnapshot, RankLoad};
use crate::state::{EngineInfo, EngineSnapshot, RankSnapshot, Registry, WindowSnapshot};
use crate::wire::ForwardPassMetrics;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Window statistics, nested like the wire: `{iterations, wall_time: {mean, ...},
/// scheduled_requests: {field: {...}}, queued_requests: {...}, wall_time_quantiles}`.
pub struct WindowJson<'a>(pub &'a WindowSnapshot);

impl Serialize for WindowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let w = self.0;
        let m = &w.moments;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("iterations", &m.count)?;
        let empty = m.count == 0;
        let stat = |i: usize| (!empty).then(|| m.summary(i));
        map.serialize_entry(FIELDS[0].name, &stat(0))?;
        for group in ["scheduled_requests", "queued_requests"] {
            let inner: Vec<(&str, Option<crate::state::welford::FieldSummary>)> = (0..FIELD_COUNT)
                .filter(|&i| FIELDS[i].group == Some(group))
                .map(|i| (FIELDS[i].name, stat(i)))
                .collect();
            map.serialize_entry(group, &GroupJson(&inner))?;
        }
        // Same order as `quantiles::QUANTILES`: 0.5, 0.9, 0.99, 1.
        let q = (!empty).then(|| {
            let mut o = serde_json::Map::new();
            for (key, v) in ["p50", "p90", "p99", "max"]
                .iter()
                .zip(w.wall_time_quantiles)
            {
                o.insert(key.to_string(), serde_json::json!(v));
            }
            o
        });
        map.serialize_entry("wall_time_quantiles", &q)?;
        map.end()
    }
}

struct GroupJson<'a>(&'a [(&'a str, Option<crate::state::welford::FieldSummary>)]);

impl Serialize for GroupJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

pub(super) struct WindowsJson<'a> {
    pub(super) names: &'a [String],
    pub(super) windows: &'a [WindowSnapshot],
}

impl Serialize for WindowsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.windows.len()))?;
        for (name, w) in self.names.iter().zip(self.windows) {
            map.serialize_entry(name, &WindowJson(w))?;
        }
        map.end()
    }
}

pub(super) struct Labels<'a>(pub(super) &'a [(String, String)]);

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct RankCounts {
    busy: u64,
    idle: u64,
    stale: u64,
    expired_total: u64,
}

#[derive(Serialize)]
/// One engine's aggregate in `/v1/ranks` and in stream snapshots.
pub struct EngineJson<'a> {
    engine: &'a str,
    labels: Labels<'a>,
    ranks: RankCounts,
    windows: WindowsJson<'a>,
    balance: BalanceJson<'a>,
    model: ModelJson,
}

impl<'a> EngineJson<'a> {
    /// The JSON view of one engine.
    pub fn new(registry: &'a Registry, e: &'a EngineSnapshot, window_names: &'a [String]) -> Self {
        let info = &registry.engines[e.engine];
        EngineJson {
            engine: &info.name,
            labels: Labels(&info.labels),
            ranks: RankCounts {
                busy: e.busy,
                idle: e.idle,
                stale: e.stale,
                expired_total: e.expired_total,
            },
            windows: WindowsJson {
                names: window_names,
                windows: &e.windows,
            },
            balance: BalanceJson {
                names: window_names,
                balance: &e.balance,
            },
            model: ModelJson::new(&e.model, registry.model_window_secs(), None),
        }
    }
}

/// An engine's balance per window: `{window: {ranks, <measure>: {ratio, mean, max,
/// heaviest: {worker_id, dp_rank}, lockstep_wait_ratio} | null}}`.
struct BalanceJson<'a> {
    names: &'a [String],
    balance: &'a [Balance],
}

impl Serialize for BalanceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Heaviest<'a> {
            worker_id: &'a str,
            dp_rank: u64,
        }
        #[derive(Serialize)]
        struct Measure<'a> {
            ratio: f64,
            mean: f64,
            max: f64,
            heaviest: Heaviest<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            lockstep_wait_ratio: Option<f64>,
        }
        struct Window<'a>(&'a Balance);
        impl Serialize for Window<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(1 + MEASURES.len()))?;
                map.serialize_entry("ranks", &self.0.ranks)?;
                for (m, b) in MEASURES.iter().zip(&self.0.measures) {
                    let v = b.as_ref().map(|b| Measure {
                        ratio: b.ratio,
                        mean: b.mean,
                        max: b.max,
                        heaviest: Heaviest {
                            worker_id: &b.heaviest.worker_id,
                            dp_rank: b.heaviest.dp_rank,
                        },
                        lockstep_wait_ratio: b.lockstep_wait,
                    });
                    map.serialize_entry(m.as_str(), &v)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(self.balance.len()))?;
        for (name, b) in self.names.iter().zip(self.balance) {
            map.serialize_entry(name, &Window(b))?;
        }
        map.end()
    }
}

/// A rank's straggler figures per window: `{window: {seconds_per_token, ratio} | null}`.
struct StragglerJson<'a> {
    names: &'a [String],
    straggler: &'a [Option<Straggler>],
}

impl Serialize for StragglerJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Figures {
            seconds_per_token: f64,
            ratio: Option<f64>,
        }
        let mut map = s.serialize_map(Some(self.straggler.len()))?;
        for (name, st) in self.names.iter().zip(self.straggler) {
            let v = st.map(|st| Figures {
                seconds_per_token: st.seconds_per_token,
                ratio: st.ratio,
            });
            map.serialize_entry(name, &v)?;
        }
        map.end()
    }
}

/// One rank in `/v1/ranks` and in stream snapshots.
#[derive(Serialize)]
pub struct RankJson<'a> {
    engine: &'a str,
    labels: Labels<'a>,
    worker_id: &'a str,
    dp_rank: u64,
    endpoint: &'a str,
    state: Liveness,
    up: bool,
    last_frame_at_ns: u64,
    age_ms: u64,
    last_received_at_ns: Option<u64>,
    last_sequence: Option<u64>,
    last: Option<&'a ForwardPassMetrics>,
    counters: &'a Counters,
    windows: WindowsJson<'a>,
    straggler: StragglerJson<'a>,
    model: ModelJson,
    /// Absent for an engine without a `load_snapshot`; null for a rank without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_snapshot: Option<Option<&'a JoinedSnapshot>>,
}

impl<'a> RankJson<'a> {
    /// With the engine's load snapshot of the same dp rank, where the engine reads them.
    pub fn joined(mut self, join: Option<&'a SnapshotJoin>, r: &RankSnapshot) -> Self {
        if let Some(j) = join.filter(|j| j.has_source(r.key.engine)) {
            self.load_snapshot = Some(j.get(r.key.engine, r.key.dp_rank));
        }
        self
    }

    /// The JSON view of one rank.
    pub fn new(registry: &'a Registry, r: &'a RankSnapshot, window_names: &'a [String]) -> Self {
        let engine: &EngineInfo = &registry.engines[r.key.engine];
        RankJson {
            engine: &engine.name,
            labels: Labels(&engine.labels),
            worker_id: &r.key.worker_id,
            dp_rank: r.key.dp_rank,
            endpoint: &r.endpoint,
            state: r.liveness,
            up: r.liveness != Liveness::Stale,
            last_frame_at_ns: r.last_frame_unix_ns,
            age_ms: r.age_ms,
            last_received_at_ns: r.last.as_ref().map(|l| l.received_at_ns),
            last_sequence: r.last.as_ref().map(|l| l.sequence),
            last: r.last.as_ref().map(|l| &l.metrics),
            counters: &r.counters,
            windows: WindowsJson {
                names: window_names,
                windows: &r.windows,
            },
            straggler: StragglerJson {
                names: window_names,
                straggler: &r.straggler,
            },
            model: ModelJson::new(&r.model, registry.model_window_secs(), None),
            load_snapshot: None,
        }
    }
}

/// The names of the configured windows, e.g. `["10s", "60s"]`.
pub fn window_names(registry: &Registry) -> Vec<String> {
    registry
        .config
        .windows
        .iter()
        .map(|w| format!("{w}s"))
        .collect()
}

/// One fit: `{samples, coefficients: {term: value} | null, r_squared}`, plus the
/// prediction when one was asked for.
pub struct FitJson {
    kind: ModelKind,
    fit: Fit,
    predict: Option<[f64; 4]>,
}

impl Serialize for FitJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("samples", &self.fit.samples)?;
        let terms = Terms(self.fit.coefficients.map(|c| {
            self.kind
                .terms()
                .iter()
                .map(|&i| (TERMS[i], c[i]))
                .collect()
        }));
        map.serialize_entry("coefficients", &terms)?;
        map.serialize_entry("r_squared", &self.fit.r_squared)?;
        if let Some(x) = &self.predict {
            map.serialize_entry("predicted_wall_time_s", &self.fit.predict(x))?;
        }
        map.end()
    }
}

/// A model's coefficients as `{term: value}` in term order, or null without a fit.
struct Terms(Option<Vec<(&'static str, f64)>>);

impl Serialize for Terms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => s.serialize_none(),
            Some(v) => {
                let mut m = s.serialize_map(Some(v.len()))?;
                for (k, x) in v {
                    m.serialize_entry(k, x)?;
                }
                m.end()
            }
        }
    }
}

/// The three fits of one set of sums: `{window_s, prefill, decode, aggregated}`.
pub struct ModelJson {
    window_secs: u64,
    fits: Vec<FitJson>,
}

impl ModelJson {
    /// Fits every model on `sums`; with `predict`, each fit also predicts wall_time there.
    pub fn new(sums: &ModelSums, window_secs: u64, predict: Option<[f64; 4]>) -> Self {
        let fits = ModelKind::ALL
            .iter()
            .map(|&kind| FitJson {
                kind,
                fit: sums.get(kind).fit(kind),
                predict,
            })
            .collect();
        ModelJson { window_secs, fits }
    }
}

impl Serialize for ModelJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1 + self.fits.len()))?;
        map.serialize_entry("window_s", &self.window_secs)?;
        for f in &self.fits {
            map.serialize_entry(f.kind.as_str(), f)?;
        }
        map.end()
    }
}

/// Whether a rank's load is current: not stale.
fn fresh(r: &RankLoad) -> bool {
    r.liveness != Liveness::Stale
}

/// The `/v1/rank_loads` document; `join` gives each rank the KV occupancy of its
/// engine's live load snapshot of the same dp rank (null without one).
pub fn loads_document(
    registry: &Registry,
    snap: &LoadsSnapshot,
    join: Option<&SnapshotJoin>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Rank<'a> {
        engine: &'a str,
        worker_id: &'a str,
        dp_rank: u64,
        state: Liveness,
        fresh: bool,
        age_ms: u64,
        last_frame_at_ns: u64,
        heartbeat: bool,
        running_requests: u64,
        waiting_requests: u64,
        kv_tokens: u64,
        queued_prefill_tokens: u64,
        last_wall_time_s: Option<f64>,
        smoothed_wall_time_s: Option<f64>,
        token_usage: Option<f64>,
        num_used_tokens: Option<u64>,
        max_total_num_tokens: Option<u64>,
    }
    #[derive(Serialize)]
    struct Doc<'a> {
        generated_at_ns: u64,
        smoothing_window_s: u64,
        ranks: Vec<Rank<'a>>,
    }
    let doc = Doc {
        generated_at_ns: snap.at_unix_ns,
        smoothing_window_s: snap.smoothing_secs,
        ranks: snap
            .ranks
            .iter()
            .map(|r| {
                let kv = live_kv(join, r.key.engine, r.key.dp_rank);
                Rank {
                    engine: &registry.engines[r.key.engine].name,
                    worker_id: &r.key.worker_id,
                    dp_rank: r.key.dp_rank,
                    state: r.liveness,
                    fresh: fresh(r),
                    age_ms: r.age_ms,
                    last_frame_at_ns: r.last_frame_unix_ns,
                    heartbeat: r.sample.heartbeat,
                    running_requests: r.sample.running_requests,
                    waiting_requests: r.sample.waiting_requests,
                    kv_tokens: r.sample.kv_tokens,
                    queued_prefill_tokens: r.sample.queued_prefill_tokens,
                    last_wall_time_s: r.last_wall_time,
                    smoothed_wall_time_s: r.smoothed_wall_time,
                    token_usage: kv.map(|k| k.token_usage),
                    num_used_tokens: kv.map(|k| k.num_used_tokens),
                    max_total_num_tokens: kv.map(|k| k.max_total_num_tokens),
                }
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("JSON of plain data cannot fail")
}

/// The KV occupancy of (engine, dp_rank)'s live load snapshot, if it has one.
pub fn live_kv(join: Option<&SnapshotJoin>, engine: usize, dp_rank: u64) -> Option<KvCapacity> {
    join.and_then(|j| j.live(engine, dp_rank)).map(|r| r.kv())
}
