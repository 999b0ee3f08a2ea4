//! Section heap: steady-state heap per tracked rank, counted in this process.

use crate::alloc::{COUNTING, LIVE_BYTES};
use crate::Bench;
use fpm_exporter::publisher::sim;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench<'_> {
    /// Steady-state heap per rank, in this process: 1,024 ranks fed for 70 simulated
    /// seconds, so every window slot and every sub-histogram of both windows is in use.
    pub(crate) fn heap(&mut self) {
        use fpm_exporter::state::{sequence::SeqEvent, RankCache, Registry, StateConfig};
        let engines = vec![fpm_exporter::state::EngineInfo {
            name: "bench".into(),
            labels: vec![],
        }];
        COUNTING.store(true, Relaxed);
        let before = LIVE_BYTES.load(Relaxed);
        let registry = Registry::new(StateConfig::default(), engines);
        let endpoint: Arc<str> = "ipc:///bench".into();
        let mut models: Vec<_> = (0..1024u64)
            .map(|r| sim::FrameModel::new("bench-engine-0", r, 1))
            .collect();
        let mut caches: Vec<RankCache> = (0..1024).map(|_| RankCache::default()).collect();
        let start = Instant::now();
        let mut seqs = vec![0u64; 1024];
        for sec in 0..70u64 {
            let now = registry.at(start + Duration::from_millis(sec * 1000 + 500));
            for _ in 0..4 {
                for (r, model) in models.iter_mut().enumerate() {
                    let m = model.next_iteration().clone();
                    let ev = if seqs[r] == 0 {
                        SeqEvent::First
                    } else {
                        SeqEvent::InOrder
                    };
                    registry.ingest(&mut caches[r], 0, &endpoint, seqs[r], ev, m, &now);
                    seqs[r] += 1;
                }
            }
        }
        let registry_bytes = LIVE_BYTES.load(Relaxed) - before;
        COUNTING.store(false, Relaxed);
        let per_rank = registry_bytes as f64 / 1024.0 / 1024.0;
        drop(registry);
        self.result(format!(
            "heap per tracked rank in steady state (1,024 ranks, windows 10s,60s, 70 s of iterations): {per_rank:.1} KiB   [target <= 16 KiB]"
        ));
    }
}
