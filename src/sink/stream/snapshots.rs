//! The `snapshot` events (one per rank) and `engine_snapshot` events (one per engine
//! with ranks in the filter) of `/v1/stream?interval=`. Rendering them means a registry
//! snapshot plus one JSON document per rank and engine; done on the async workers for hundreds
//! of clients ten times a second, it would take the threads that ingest and HTTP run
//! on. So it runs on the blocking pool under a budget of its own (a few threads at
//! most), and clients with the same filter share one rendering made within
//! [`REUSE_WITHIN`]: the cost follows the number of distinct filters, not of clients.

use super::StreamMessage;
use crate::sink::serving::HttpStats;
use crate::sink::shared_json::{window_names, EngineJson, RankJson};
use crate::state::{RankFilter, Registry};
use parking_lot::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How old a shared rendering may be when handed to another client.
pub const REUSE_WITHIN: Duration = Duration::from_millis(50);

/// Most distinct filters remembered (older renderings are dropped first).
const MAX_REMEMBERED: usize = 64;

type Rendered = Arc<[StreamMessage]>;

/// The shared renderer of snapshot events.
pub struct Snapshots {
    permits: Arc<Semaphore>,
    stats: Arc<HttpStats>,
    recent: Mutex<Vec<(RankFilter, Instant, Rendered)>>,
}

fn same(a: &RankFilter, b: &RankFilter) -> bool {
    a.engine == b.engine && a.worker_id == b.worker_id && a.dp_rank == b.dp_rank
}

impl Snapshots {
    /// A renderer running at most `concurrent` renderings at once, counting skipped
    /// renderings into `stats`.
    pub fn new(concurrent: usize, stats: Arc<HttpStats>) -> Arc<Self> {
        Arc::new(Snapshots {
            stats,
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            recent: Mutex::new(Vec::new()),
        })
    }

    /// A budget of half the cores (at least one): ingest keeps the rest.
    pub fn for_this_machine(stats: Arc<HttpStats>) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(cores / 2, stats)
    }

    fn reuse(&self, filter: &RankFilter) -> Option<Rendered> {
        let recent = self.recent.lock();
        recent
            .iter()
            .find(|(f, at, _)| same(f, filter) && at.elapsed() <= REUSE_WITHIN)
            .map(|(_, _, r)| r.clone())
    }

    fn remember(&self, filter: RankFilter, rendered: Rendered) {
        let mut recent = self.recent.lock();
        recent.retain(|(f, at, _)| !same(f, &filter) && at.elapsed() <= REUSE_WITHIN);
        if recent.len() >= MAX_REMEMBERED {
            recent.remove(0);
        }
        recent.push((filter, Instant::now(), rendered));
    }

    /// The snapshot events of `filter`, or `None` (counted as skipped) when the budget
    /// stayed busy for `wait`, i.e. until the client's next interval.
    pub async fn get(
        &self,
        registry: &Arc<Registry>,
        filter: &RankFilter,
        wait: Duration,
    ) -> Option<Rendered> {
        if let Some(r) = self.reuse(filter) {
            return Some(r);
        }
        let Ok(Ok(permit)) = tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await
        else {
            self.stats.snapshots_skipped.fetch_add(1, Relaxed);
            return None;
        };
        // Whoever held the permit before may have rendered this very filter.
        if let Some(r) = self.reuse(filter) {
            return Some(r);
        }
        let (reg, f) = (registry.clone(), filter.clone());
        let rendered = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            render(&reg, &f)
        })
        .await
        .ok()?;
        self.remember(filter.clone(), rendered.clone());
        Some(rendered)
    }
}

fn render(registry: &Registry, filter: &RankFilter) -> Rendered {
    let snap = registry.snapshot(filter);
    let names = window_names(registry);
    let json = |v: &dyn erased_json::Json| -> bytes::Bytes { v.to_vec().into() };
    let ranks = snap.ranks.iter().map(|r| StreamMessage {
        event: "snapshot",
        data: json(&RankJson::new(registry, r, &names)),
    });
    // Then each engine of the filter with at least one rank in it: its aggregate and
    // balance, which no single rank's event can carry.
    let engines = snap
        .engines
        .iter()
        .filter(|e| snap.ranks.iter().any(|r| r.key.engine == e.engine))
        .map(|e| StreamMessage {
            event: "engine_snapshot",
            data: json(&EngineJson::new(registry, e, &names)),
        });
    ranks.chain(engines).collect()
}

/// `serde_json::to_vec` behind a trait object, for the two document types above.
mod erased_json {
    pub trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("JSON of plain data cannot fail")
        }
    }
}
