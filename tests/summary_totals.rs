//! The wall_time summaries' `_sum` and `_count` are cumulative, as the exposition formats
//! define them: they never go down across scrapes while the window empties, frames come
//! and go, or a rank expires, so `rate(_sum) / rate(_count)` is the mean wall time.
//! The quantiles stay windowed.

mod common;

use common::sample;
use fpm_exporter::sink::prometheus::{render, text::Format};
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, Registry, StateConfig};
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame(worker: &str, wall: f64) -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: worker.into(),
        ..Default::default()
    };
    m.wall_time = Real(wall);
    m.scheduled_requests.num_decode_requests = Count(2);
    m
}

/// (sum, count) of a summary, for the rank `worker` or (None) the engine.
fn totals(body: &str, worker: Option<&str>) -> Option<(f64, f64)> {
    let (name, labels) = match worker {
        Some(w) => (
            "fpm_wall_time_window_seconds",
            vec![("worker_id", w), ("window", "1s")],
        ),
        None => (
            "fpm_engine_wall_time_window_seconds",
            vec![("window", "1s")],
        ),
    };
    let sum = sample(body, &format!("{name}_sum"), &labels)?;
    let count = sample(body, &format!("{name}_count"), &labels)?;
    Some((sum, count))
}

#[test]
fn summary_sum_and_count_are_cumulative_across_scrapes() {
    let reg = Registry::new(
        StateConfig {
            windows: vec![1, 3],
            ..Default::default()
        },
        vec![EngineInfo {
            name: "e".into(),
            labels: vec![],
        }],
    );
    let mut caches = [RankCache::default(), RankCache::default()];
    let mut seqs = [0u64; 2];
    let mut feed = |rank: usize, n: usize, wall: f64| {
        let ep: Arc<str> = format!("tcp://127.0.0.1:{}", 1 + rank).into();
        for _ in 0..n {
            let ev = if seqs[rank] == 0 {
                SeqEvent::First
            } else {
                SeqEvent::InOrder
            };
            let f = frame(["a", "b"][rank], wall);
            assert!(reg.ingest(&mut caches[rank], 0, &ep, seqs[rank], ev, f, &reg.now()));
            seqs[rank] += 1;
        }
    };
    let scrape = || render(&reg, Format::Text, 0.0);
    let mut engine_seen: Vec<(f64, f64)> = Vec::new();
    let mut check = |body: &str, want_engine: (f64, f64)| {
        let e = totals(body, None).expect("engine _sum/_count always written");
        assert!(
            (e.0 - want_engine.0).abs() < 1e-9 && e.1 == want_engine.1,
            "engine {e:?}"
        );
        if let Some(prev) = engine_seen.last() {
            assert!(
                e.0 >= prev.0 && e.1 >= prev.1,
                "engine went down: {prev:?} -> {e:?}"
            );
        }
        engine_seen.push(e);
    };

    feed(0, 10, 0.02);
    feed(1, 4, 0.5);
    let body = scrape();
    let a = totals(&body, Some("a")).unwrap();
    assert!((a.0 - 0.2).abs() < 1e-12 && a.1 == 10.0, "{a:?}");
    check(&body, (2.2, 14.0));
    let (ok, report) = common::promtool_check(&body);
    assert!(ok, "promtool:\n{report}");

    // The 1 s window empties: no quantiles any more, the totals stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = scrape();
        let q = [("worker_id", "a"), ("window", "1s"), ("quantile", "0.5")];
        if sample(&body, "fpm_wall_time_window_seconds", &q).is_none() {
            break body;
        }
        assert!(Instant::now() < deadline, "1 s window never emptied");
        std::thread::sleep(Duration::from_millis(50));
    };
    let a = totals(&body, Some("a")).expect("written with an empty window");
    assert!((a.0 - 0.2).abs() < 1e-12 && a.1 == 10.0, "{a:?}");
    check(&body, (2.2, 14.0));
    let (ok, report) = common::promtool_check(&body);
    assert!(ok, "promtool with an empty window:\n{report}");

    // Fewer frames in the next window than in the first: the totals still grow.
    feed(0, 2, 0.03);
    let body = scrape();
    let a = totals(&body, Some("a")).unwrap();
    assert!((a.0 - 0.26).abs() < 1e-12 && a.1 == 12.0, "{a:?}");
    check(&body, (2.26, 16.0));

    // Both ranks expire: their series go, the engine's totals keep what they added.
    feed(0, 1, 0.04);
    let later = Instant::now() + StateConfig::default().expire_after + Duration::from_secs(1);
    reg.sweep(&reg.at(later));
    assert_eq!(reg.rank_count(), 0);
    let body = scrape();
    assert_eq!(totals(&body, Some("a")), None);
    check(&body, (2.30, 17.0));

    // A rank seen afresh starts its own totals from zero and adds to the engine's.
    feed(1, 3, 0.1);
    let body = scrape();
    let b = totals(&body, Some("b")).unwrap();
    assert!((b.0 - 0.3).abs() < 1e-12 && b.1 == 3.0, "{b:?}");
    check(&body, (2.60, 20.0));
}
