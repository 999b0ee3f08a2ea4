//! JSON feeds for routers and planners: `/v1/rank_loads` (and its SGLang `/get_load`
//! shape) and `/v1/model`; their shared JSON pieces are in [`super::shared_json`].
//! Schemas: `proto/schema/loads.schema.json`, `get_load.schema.json`, `model.schema.json`.

use super::shared_json::{live_kv, ModelJson};
use crate::state::load_snapshots::SnapshotJoin;
use crate::state::rank::Liveness;
use crate::state::views::{LoadsSnapshot, ModelsSnapshot, RankLoad};
use crate::state::Registry;
use serde::Serialize;

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
/// tokens), plus `state` and `age_ms` so a stale rank is never mistaken for an idle one,
/// and the KV occupancy of the rank's live load snapshot (`token_usage`,
/// `num_used_tokens`, `max_total_num_tokens`; null without one).
pub fn get_load_document(
    registry: &Registry,
    snap: &LoadsSnapshot,
    join: Option<&SnapshotJoin>,
) -> Result<Vec<u8>, GetLoadError> {
    #[derive(Serialize)]
    struct Entry {
        dp_rank: u64,
        num_reqs: u64,
        num_waiting_reqs: u64,
        num_tokens: u64,
        state: Liveness,
        age_ms: u64,
        token_usage: Option<f64>,
        num_used_tokens: Option<u64>,
        max_total_num_tokens: Option<u64>,
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
            let kv = live_kv(join, r.key.engine, r.key.dp_rank);
            Entry {
                dp_rank: r.key.dp_rank,
                num_reqs: s.running_requests.saturating_add(s.waiting_requests),
                num_waiting_reqs: s.waiting_requests,
                num_tokens: s.kv_tokens.saturating_add(s.queued_prefill_tokens),
                state: r.liveness,
                age_ms: r.age_ms,
                token_usage: kv.map(|k| k.token_usage),
                num_used_tokens: kv.map(|k| k.num_used_tokens),
                max_total_num_tokens: kv.map(|k| k.max_total_num_tokens),
            }
        })
        .collect();
    Ok(serde_json::to_vec(&entries).expect("JSON of plain data cannot fail"))
}
