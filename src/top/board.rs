//! The ranks `top` has seen, fed by the stream's events: per-interval rates from the
//! counters, the wall-time history of each row, and which ranks are down.

use super::model::{
    shortest, EngineSnapshot, RankLoads, RankSnapshot, Row, SortKey, State, StateEvent,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A rank silent on a live stream for this long has expired on the exporter: down.
/// (Snapshots come every second; an expired rank is no longer in them.)
pub const DOWN_AFTER: Duration = Duration::from_millis(3500);
/// A down rank leaves the screen after this long.
const FORGET_DOWN: Duration = Duration::from_secs(120);
/// Points of a row's wall-time sparkline (one per snapshot, about a second each).
pub const HISTORY: usize = 60;

type Key = (String, String, u64);

/// One rank's latest snapshot and what `top` derived from the ones before.
struct Tracked {
    snap: RankSnapshot,
    at: Instant,
    expired: bool,
    prev: Option<(Instant, f64, f64, f64)>,
    fps: Option<f64>,
    history: VecDeque<f64>,
}

/// Every rank and engine seen, and the exporter-side problems counted.
#[derive(Default)]
pub struct Board {
    ranks: BTreeMap<Key, Tracked>,
    engines: BTreeMap<String, EngineSnapshot>,
    usage: BTreeMap<Key, f64>,
    /// Events the exporter skipped because this client read too slowly.
    pub lagged: u64,
}

/// Totals over every rank, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Ranks per state: busy, idle, stale, down.
    pub states: [usize; 4],
    /// Frames lost (sequence gaps and reconnects).
    pub missed: f64,
    /// Frames seen twice.
    pub duplicates: f64,
    /// Publisher restarts.
    pub restarts: f64,
}

impl Board {
    /// Takes in a `snapshot` event received at `now`.
    pub fn rank(&mut self, snap: RankSnapshot, now: Instant) {
        let key = (snap.engine.clone(), snap.worker_id.clone(), snap.dp_rank);
        let c = &snap.counters;
        let t = self.ranks.entry(key).or_insert_with(|| Tracked {
            snap: snap.clone(),
            at: now,
            expired: false,
            prev: None,
            fps: None,
            history: VecDeque::with_capacity(HISTORY),
        });
        // Counters only grow, except across an exporter restart: then start again.
        if let Some((then, frames, iterations, wall)) = t.prev {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if c.frames < frames || c.iterations < iterations {
                t.fps = None;
            } else if dt > 0.0 {
                t.fps = Some((c.frames - frames) / dt);
                let di = c.iterations - iterations;
                if di > 0.0 {
                    t.history.push_back((c.wall_time_seconds - wall) / di);
                } else if snap.state != "busy" {
                    t.history.push_back(0.0);
                }
                while t.history.len() > HISTORY {
                    t.history.pop_front();
                }
            }
        }
        t.prev = Some((now, c.frames, c.iterations, c.wall_time_seconds));
        t.snap = snap;
        t.at = now;
        t.expired = false;
    }

    /// A new stream opened: rates start again from its first snapshots, never across
    /// the gap (the exporter may have restarted, or the reader been away).
    pub fn new_stream(&mut self) {
        for t in self.ranks.values_mut() {
            (t.prev, t.fps) = (None, None);
        }
    }

    /// Takes in a read of `/v1/rank_loads`: the engines' own KV use, where they have it.
    pub fn loads(&mut self, loads: RankLoads) {
        self.usage = loads
            .ranks
            .into_iter()
            .filter_map(|r| Some(((r.engine, r.worker_id, r.dp_rank), r.token_usage?)))
            .collect();
    }

    /// Takes in an `engine_snapshot` event.
    pub fn engine(&mut self, snap: EngineSnapshot) {
        self.engines.insert(snap.engine.clone(), snap);
    }

    /// Takes in a `state` event: an expiry shows the rank down at once.
    pub fn state(&mut self, event: StateEvent) {
        let key = (event.engine, event.worker_id, event.dp_rank);
        if let Some(t) = self.ranks.get_mut(&key) {
            if event.to == "expired" {
                t.expired = true;
            } else {
                t.snap.state = event.to;
            }
        }
    }

    /// The engines seen, by name.
    pub fn engine_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ranks.keys().map(|k| k.0.clone()).collect();
        names.dedup();
        names
    }

    /// An engine's latest aggregate.
    pub fn engine_snapshot(&self, name: &str) -> Option<&EngineSnapshot> {
        self.engines.get(name)
    }

    /// Drops ranks down for long enough.
    pub fn forget(&mut self, now: Instant) {
        self.ranks
            .retain(|_, t| now.saturating_duration_since(t.at) < FORGET_DOWN);
    }

    /// Rows grouped by engine (engines by name), sorted by `sort` inside each, with
    /// `engine` (when given) the only engine. `live`: the stream is connected, so a
    /// rank missing from it is down rather than merely unheard of.
    pub fn rows(
        &self,
        now: Instant,
        live: bool,
        sort: SortKey,
        engine: Option<&str>,
    ) -> Vec<(String, Vec<Row>)> {
        let mut groups: Vec<(String, Vec<Row>)> = Vec::new();
        for (key, t) in &self.ranks {
            let name = &key.0;
            if engine.is_some_and(|e| e != name) {
                continue;
            }
            if groups.last().is_none_or(|g| &g.0 != name) {
                groups.push((name.clone(), Vec::new()));
            }
            let mut r = row(t, now, live);
            r.usage = self.usage.get(key).copied();
            groups.last_mut().unwrap().1.push(r);
        }
        for (_, rows) in &mut groups {
            rows.sort_by(|a, b| {
                let by = |x: &Row| match sort {
                    SortKey::Rank => 0.0,
                    SortKey::Work => -x.kv,
                    SortKey::Wall => -x.p50.unwrap_or(0.0),
                    SortKey::Queue => -x.queued,
                };
                by(a)
                    .total_cmp(&by(b))
                    .then_with(|| a.worker_id.cmp(&b.worker_id))
                    .then(a.dp_rank.cmp(&b.dp_rank))
            });
        }
        groups
    }

    /// Totals over every rank.
    pub fn totals(&self, now: Instant, live: bool) -> Totals {
        let mut out = Totals::default();
        for t in self.ranks.values() {
            out.states[row(t, now, live).state as usize] += 1;
            let c = &t.snap.counters;
            out.missed += c.missed_frames + c.reconnect_missed_frames;
            out.duplicates += c.duplicate_frames;
            out.restarts += c.publisher_restarts;
        }
        out
    }
}

/// What one rank shows now.
fn row(t: &Tracked, now: Instant, live: bool) -> Row {
    let s = &t.snap;
    let down = t.expired || (live && now.saturating_duration_since(t.at) > DOWN_AFTER);
    let state = match s.state.as_str() {
        _ if down => State::Down,
        "busy" => State::Busy,
        "idle" => State::Idle,
        "stale" => State::Stale,
        _ => State::Down,
    };
    // An idle rank's load is zero (its latest frame was a heartbeat, docs/feeds.md);
    // a stale one keeps its last known load.
    let active = matches!(state, State::Busy | State::Stale);
    let last = s.last.clone().filter(|_| active).unwrap_or_default();
    let (sched, queued) = (&last.scheduled_requests, &last.queued_requests);
    let window = shortest(&s.windows).and_then(|w| s.windows[w].as_ref());
    let quantiles = window.and_then(|w| w.wall_time_quantiles.as_ref());
    Row {
        worker_id: s.worker_id.clone(),
        dp_rank: s.dp_rank,
        state,
        age_ms: s.age_ms,
        running: sched.num_prefill_requests + sched.num_decode_requests,
        queued: queued.num_prefill_requests + queued.num_decode_requests,
        kv: sched.sum_decode_kv_tokens + sched.sum_prefill_kv_tokens,
        prefill: window.map(|w| w.scheduled_requests.sum_prefill_tokens.mean),
        p50: quantiles.map(|q| q.p50),
        p99: quantiles.map(|q| q.p99),
        fps: if down { Some(0.0) } else { t.fps },
        straggler: shortest(&s.straggler)
            .and_then(|w| s.straggler[w].as_ref())
            .and_then(|x| x.ratio),
        usage: None, // from /v1/rank_loads, by the caller
        history: t.history.iter().copied().collect(),
    }
}

#[cfg(test)]
#[path = "board_tests.rs"]
mod tests;
