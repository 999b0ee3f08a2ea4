//! The ingest fast path (one lock per frame on the cached rank) must still notice a
//! rank the sweeper expired, and register it afresh instead of feeding a dead handle.

use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, RankFilter, Registry, StateConfig};
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame() -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: "w".into(),
        dp_rank: 3,
        ..Default::default()
    };
    m.wall_time = Real(0.02);
    m.scheduled_requests.num_decode_requests = Count(8);
    m
}

#[test]
fn expired_rank_is_registered_again_through_the_cache() {
    let reg = Registry::new(
        StateConfig::default(),
        vec![EngineInfo {
            name: "e".into(),
            labels: vec![],
        }],
    );
    let endpoint: Arc<str> = "ipc:///x.3".into();
    let mut cache = RankCache::default();
    let t0 = Instant::now();
    let now = reg.at(t0);
    assert!(reg.ingest(&mut cache, 0, &endpoint, 0, SeqEvent::First, frame(), &now));
    assert!(reg.ingest(
        &mut cache,
        0,
        &endpoint,
        1,
        SeqEvent::InOrder,
        frame(),
        &now
    ));
    let frames = |reg: &Registry| {
        reg.snapshot(&RankFilter::default())
            .ranks
            .iter()
            .map(|r| r.counters.frames)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        frames(&reg),
        vec![2],
        "both frames on one rank via the cache"
    );

    // Silent past the expiry timeout: the sweeper removes it.
    let later = reg.at(t0 + StateConfig::default().expire_after + Duration::from_secs(1));
    reg.sweep(&later);
    assert_eq!(reg.rank_count(), 0);
    assert_eq!(reg.expired[0].load(std::sync::atomic::Ordering::Relaxed), 1);

    // The same ingest task (same cache) sends again: a new rank, counted from zero.
    assert!(reg.ingest(
        &mut cache,
        0,
        &endpoint,
        2,
        SeqEvent::InOrder,
        frame(),
        &later
    ));
    assert_eq!(reg.rank_count(), 1);
    assert_eq!(frames(&reg), vec![1]);
}
