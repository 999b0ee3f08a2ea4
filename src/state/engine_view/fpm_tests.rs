//! The FPM summary from a registry fed real frames through its ingest path.

use super::*;
use crate::state::sequence::SeqEvent;
use crate::state::{EngineInfo, RankCache, StateConfig};
use crate::wire::{Count, ForwardPassMetrics, Real};
use std::sync::Arc;

fn frame(worker: &str, rank: u64, wall: f64, queued_tokens: u64) -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: worker.into(),
        dp_rank: rank,
        wall_time: Real(wall),
        ..Default::default()
    };
    m.scheduled_requests.num_decode_requests = Count(6);
    m.scheduled_requests.num_prefill_requests = Count(1);
    m.queued_requests.num_prefill_requests = Count(2);
    m.queued_requests.sum_prefill_tokens = Count(queued_tokens);
    m
}

fn engines() -> Vec<EngineInfo> {
    ["sglang", "other"]
        .iter()
        .map(|n| EngineInfo {
            name: n.to_string(),
            labels: vec![],
        })
        .collect()
}

#[test]
fn summarizes_each_rank_of_the_engine_only() {
    let reg = Registry::new(StateConfig::default(), engines());
    let ep: Arc<str> = "ipc:///x".into();
    let mut cache = RankCache::default();
    let now = reg.now();
    for i in 0..20u64 {
        let wall = 0.01 * (1 + i % 2) as f64;
        let seq = if i == 0 {
            SeqEvent::First
        } else {
            SeqEvent::InOrder
        };
        assert!(reg.ingest(
            &mut cache,
            0,
            &ep,
            i,
            seq,
            frame("w", 0, wall, 100 + i),
            &now
        ));
    }
    let mut other = RankCache::default();
    reg.ingest(
        &mut other,
        1,
        &ep,
        0,
        SeqEvent::First,
        frame("z", 0, 0.5, 1),
        &now,
    );

    let s = fpm_summary(&reg, "sglang", None).expect("configured engine");
    assert_eq!(s.window_seconds, 10);
    assert_eq!((s.busy, s.idle, s.stale), (1, 0, 0));
    assert_eq!(s.ranks.len(), 1, "the other engine's rank is not listed");
    let r = &s.ranks[0];
    assert_eq!((r.worker_id.as_str(), r.dp_rank), ("w", 0));
    assert_eq!(r.state, Liveness::Busy);
    // 20 iterations in the 10 s window.
    assert_eq!(r.iterations_per_second, 2.0);
    assert_eq!(s.iterations_per_second, 2.0);
    assert_eq!((r.running_requests, r.queued_requests), (7, 2));
    assert_eq!(r.queued_prefill_tokens, 119, "the latest frame's");
    // Half the iterations took 10 ms, half 20 ms (hdrhistogram precision).
    let w = r.wall_time_seconds;
    assert!((w.p50.unwrap() - 0.01).abs() < 1e-4, "{w:?}");
    assert!((w.p99.unwrap() - 0.02).abs() < 1e-4, "{w:?}");
    assert!((w.max.unwrap() - 0.02).abs() < 1e-4, "{w:?}");

    assert_eq!(fpm_summary(&reg, "nope", None), None);
    let empty = fpm_summary(
        &Registry::new(StateConfig::default(), engines()),
        "other",
        None,
    )
    .unwrap();
    assert!(empty.ranks.is_empty());
    assert_eq!(empty.iterations_per_second, 0.0);
}
