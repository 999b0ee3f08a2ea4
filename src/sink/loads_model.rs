//! JSON feeds for routers and planners: `/v1/loads` (and its SGLang `/get_load`
//! shape) and `/v1/model`, plus the `model` object of `/v1/ranks`.
//! Schemas: `proto/schema/loads.schema.json`, `get_load.schema.json`, `model.schema.json`.

use crate::state::model::{Fit, ModelKind, ModelSums, TERMS};
use crate::state::rank::Liveness;
use crate::state::views::{LoadsSnapshot, ModelsSnapshot, RankLoad};
use crate::state::Registry;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

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

/// The `/v1/model` document: fits of every matching rank and of their engines, with
/// predictions at `x = [1, prefill_tokens, decode_requests, decode_kv_tokens]`.
pub fn model_document(registry: &Registry, snap: &ModelsSnapshot, x: [f64; 4]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Query {
        prefill_tokens: f64,
        decode_requests: f64,
        decode_kv_tokens: f64,
    }
    #[derive(Serialize)]
    struct Rank<'a> {
        engine: &'a str,
        worker_id: &'a str,
        dp_rank: u64,
        state: Liveness,
        model: ModelJson,
    }
    #[derive(Serialize)]
    struct Engine<'a> {
        engine: &'a str,
        ranks: usize,
        model: ModelJson,
    }
    #[derive(Serialize)]
    struct Doc<'a> {
        generated_at_ns: u64,
        query: Query,
        ranks: Vec<Rank<'a>>,
        engines: Vec<Engine<'a>>,
    }
    let doc = Doc {
        generated_at_ns: snap.at_unix_ns,
        query: Query {
            prefill_tokens: x[1],
            decode_requests: x[2],
            decode_kv_tokens: x[3],
        },
        ranks: snap
            .ranks
            .iter()
            .map(|(key, state, sums)| Rank {
                engine: &registry.engines[key.engine].name,
                worker_id: &key.worker_id,
                dp_rank: key.dp_rank,
                state: *state,
                model: ModelJson::new(sums, snap.window_secs, Some(x)),
            })
            .collect(),
        engines: snap
            .engines
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(i, (sums, n))| Engine {
                engine: &registry.engines[i].name,
                ranks: *n,
                model: ModelJson::new(sums, snap.window_secs, Some(x)),
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("JSON of plain data cannot fail")
}

/// Whether a rank's load is current: not stale.
fn fresh(r: &RankLoad) -> bool {
    r.liveness != Liveness::Stale
}

/// The `/v1/loads` document.
pub fn loads_document(registry: &Registry, snap: &LoadsSnapshot) -> Vec<u8> {
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
            .map(|r| Rank {
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
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("JSON of plain data cannot fail")
}

/// Why an SGLang-shaped answer cannot be given.
#[derive(Debug, PartialEq, Eq)]
pub enum GetLoadError {
    /// No rank matched the filter.
    NoRank,
    /// Ranks of more than one (engine, worker_id) matched: the caller must say which.
    SeveralWorkers(Vec<String>),
}

/// SGLang's `/get_load` answer for one worker: one entry per dp rank,
/// `{dp_rank, num_reqs, num_waiting_reqs, num_tokens}` as SGLang's scheduler computes
/// them (requests running plus waiting; waiting; KV tokens in use plus queued prompt
/// tokens), plus `state` and `age_ms` so a stale rank is never mistaken for an idle one.
pub fn get_load_document(
    registry: &Registry,
    snap: &LoadsSnapshot,
) -> Result<Vec<u8>, GetLoadError> {
    #[derive(Serialize)]
    struct Entry {
        dp_rank: u64,
        num_reqs: u64,
        num_waiting_reqs: u64,
        num_tokens: u64,
        state: Liveness,
        age_ms: u64,
    }
    let Some(first) = snap.ranks.first() else {
        return Err(GetLoadError::NoRank);
    };
    let same =
        |r: &RankLoad| r.key.engine == first.key.engine && r.key.worker_id == first.key.worker_id;
    if !snap.ranks.iter().all(same) {
        let mut workers: Vec<String> = snap
            .ranks
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    registry.engines[r.key.engine].name, r.key.worker_id
                )
            })
            .collect();
        workers.dedup();
        return Err(GetLoadError::SeveralWorkers(workers));
    }
    let entries: Vec<Entry> = snap
        .ranks
        .iter()
        .map(|r| {
            let s = &r.sample;
            Entry {
                dp_rank: r.key.dp_rank,
                num_reqs: s.running_requests.saturating_add(s.waiting_requests),
                num_waiting_reqs: s.waiting_requests,
                num_tokens: s.kv_tokens.saturating_add(s.queued_prefill_tokens),
                state: r.liveness,
                age_ms: r.age_ms,
            }
        })
        .collect();
    Ok(serde_json::to_vec(&entries).expect("JSON of plain data cannot fail"))
}
