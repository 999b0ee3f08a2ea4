//! `GET /v1/engines` and the `event: engine` of `/v1/stream`: per worker of the engine
//! metrics fan-in (remote `--scrape` targets and local `--multiproc-dir` directories),
//! its typed view from its two latest reads, joined with its engine's FPM ranks.
//!
//! Remote workers are read from the scrape cache (never waiting for a worker). A local
//! directory is read at most once per scrape interval, on the blocking pool, when a
//! reader asks; its two latest reads are kept, so its rates cover one interval however
//! many planners poll.

use super::query::{self, error};
use super::AppState;
use crate::state::engine_view::document::{EnginesDocument, WorkerEntry};
use crate::state::engine_view::engine_view;
use crate::state::engine_view::fpm::{fpm_summary, FpmSummary};
use crate::state::load_snapshots::SnapshotJoin;
use crate::wire::exposition::Scrape;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a local directory is read for the view (as remote workers' default).
pub const LOCAL_READ_INTERVAL: Duration = crate::source::scrape::DEFAULT_INTERVAL;

/// The two latest reads of every local multiprocess directory, in directory order.
#[derive(Debug, Default)]
pub struct LocalReads {
    reads: Mutex<Vec<ReadPair>>,
}

/// A directory's previous and latest read.
type ReadPair = (Option<Arc<Scrape>>, Option<Arc<Scrape>>);

/// One worker's reads: engine, its address as configured, previous and latest.
type WorkerReads = (String, String, Option<Arc<Scrape>>, Option<Arc<Scrape>>);

/// Every worker's two latest reads, local directories first (refreshed when older than
/// an interval), then the remote targets.
fn worker_reads(app: &AppState, interval: Duration) -> Vec<WorkerReads> {
    let mut out = Vec::new();
    if let Some(em) = &app.engine_metrics {
        let mut reads = app.local_reads.reads.lock();
        reads.resize(em.dirs.len(), (None, None));
        let now = SystemTime::now();
        for (dir, (previous, latest)) in em.dirs.iter().zip(reads.iter_mut()) {
            let due = latest
                .as_ref()
                .is_none_or(|l| now.duration_since(l.at).unwrap_or_default() >= interval);
            if due {
                let (families, _) = dir.collect();
                let fresh = Arc::new(Scrape {
                    at: SystemTime::now(),
                    families: families.as_ref().clone(),
                });
                *previous = latest.replace(fresh);
            }
            out.push((
                dir.engine.clone(),
                dir.worker_addr.clone(),
                previous.clone(),
                latest.clone(),
            ));
        }
    }
    // One entry per address as configured, so a router joins it with the address its
    // gateway lists: the dp ranks of one worker share one scrape and one view.
    if let Some(w) = &app.workers {
        for v in w.snapshot() {
            for a in &v.addresses {
                out.push((
                    v.engine.clone(),
                    a.trim().to_owned(),
                    v.previous.clone(),
                    v.latest.clone(),
                ));
            }
        }
    }
    out
}

/// The FPM summary of `engine` joined with its load snapshots, `None` while it has no
/// FPM rank.
fn fpm_of(app: &AppState, engine: &str, join: Option<&SnapshotJoin>) -> Option<FpmSummary> {
    fpm_summary(&app.registry, engine, join).filter(|f| !f.ranks.is_empty())
}

/// The engines' load snapshots now, read for the join (none without a source).
fn join_now(app: &AppState) -> Option<SnapshotJoin> {
    app.load_snapshots.as_ref().map(|s| s.join_now())
}

/// The entry of one worker: its view (none before a successful read) and `fpm`.
fn entry(
    (engine, worker_addr, previous, latest): WorkerReads,
    fpm: Option<FpmSummary>,
) -> WorkerEntry {
    let view = latest
        .as_deref()
        .map(|l| engine_view(previous.as_deref(), l));
    WorkerEntry {
        engine,
        worker_addr,
        view,
        fpm,
    }
}

fn interval(app: &AppState) -> Duration {
    app.workers
        .as_ref()
        .map_or(LOCAL_READ_INTERVAL, |w| w.settings.interval)
}

/// The whole document, for the workers of `engine` (all when `None`).
pub fn document(app: &AppState, engine: Option<&str>) -> EnginesDocument {
    // Workers of one engine share its FPM summary: one registry snapshot per engine.
    let mut fpm = std::collections::HashMap::new();
    let join = join_now(app);
    let workers = worker_reads(app, interval(app))
        .into_iter()
        .filter(|w| engine.is_none_or(|e| e == w.0))
        .map(|w| {
            let f = fpm
                .entry(w.0.clone())
                .or_insert_with(|| fpm_of(app, &w.0, join.as_ref()))
                .clone();
            entry(w, f)
        })
        .collect();
    EnginesDocument {
        generated_at_ns: app.registry.now().unix_ns,
        workers,
    }
}

/// Query of `/v1/engines`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginesParams {
    engine: Option<String>,
}

/// `GET /v1/engines`; 404 when no engine has `--scrape` or `--multiproc-dir`.
pub async fn engines(
    State(app): State<AppState>,
    params: Result<Query<EnginesParams>, QueryRejection>,
) -> Response {
    let p = match query::parse(params) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = query::check_lengths([&p.engine]) {
        return e.into_response();
    }
    if app.engine_metrics.is_none() && app.workers.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "no engine has a scrape target or multiprocess directory (--scrape, --multiproc-dir)",
        );
    }
    // Reading a directory and computing views must not hold an async worker.
    let body = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&document(&app, p.engine.as_deref())).expect("serializable")
    })
    .await;
    match body {
        Ok(b) => query::json(b),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering /v1/engines failed",
        ),
    }
}

/// Follows the workers for `/v1/stream?engines=true`: yields one `WorkerEntry` (as
/// JSON) per worker each time it has a new read, checked every `poll`.
pub struct EngineWatch {
    app: AppState,
    engine: Option<String>,
    seen: Vec<Option<SystemTime>>,
    pending: std::collections::VecDeque<Vec<u8>>,
    tick: tokio::time::Interval,
}

impl EngineWatch {
    /// A watch over the workers of `engine` (all when `None`); none when the exporter
    /// has no engine metrics at all.
    pub fn new(app: AppState, engine: Option<String>, poll: Duration) -> Option<Self> {
        if app.engine_metrics.is_none() && app.workers.is_none() {
            return None;
        }
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(EngineWatch {
            app,
            engine,
            seen: Vec::new(),
            pending: Default::default(),
            tick,
        })
    }

    /// The next worker entry with a new read.
    pub async fn next(&mut self) -> Vec<u8> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return e;
            }
            self.tick.tick().await;
            let app = self.app.clone();
            let engine = self.engine.clone();
            let seen = std::mem::take(&mut self.seen);
            let checked =
                tokio::task::spawn_blocking(move || fresh_entries(&app, engine, seen)).await;
            if let Ok((seen, fresh)) = checked {
                self.seen = seen;
                self.pending.extend(fresh);
            }
        }
    }
}

/// The entries of workers whose latest read is newer than in `seen`, and the new `seen`.
fn fresh_entries(
    app: &AppState,
    engine: Option<String>,
    mut seen: Vec<Option<SystemTime>>,
) -> (Vec<Option<SystemTime>>, Vec<Vec<u8>>) {
    let reads = worker_reads(app, interval(app));
    seen.resize(reads.len(), None);
    let mut join = None;
    let mut out = Vec::new();
    for (i, w) in reads.into_iter().enumerate() {
        let at = w.3.as_ref().map(|l| l.at);
        if at.is_none() || at == seen[i] {
            continue;
        }
        seen[i] = at;
        if engine.as_deref().is_some_and(|e| e != w.0) {
            continue;
        }
        let join = join.get_or_insert_with(|| join_now(app));
        let fpm = fpm_of(app, &w.0, join.as_ref());
        out.push(serde_json::to_vec(&entry(w, fpm)).expect("serializable"));
    }
    (seen, out)
}
