//! Costs of the feeds: the per-frame model update on the ingest path (against the
//! whole per-frame state update it is part of), the lazy fit at read time, a
//! `/v1/rank_loads` read, and one capture line.
//! Run: `cargo bench --bench feeds` (prints time per operation).

use criterion::{black_box, Criterion};
use fpm_exporter::state::model::{ModelKind, ModelRing, ModelSums};
use fpm_exporter::state::rank::{RankKey, RankState};
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, RankFilter, Registry, StateConfig};
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real};
use std::sync::Arc;
use std::time::Duration;

fn frame(i: u64) -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: "bench".into(),
        wall_time: Real(0.02 + (i % 7) as f64 * 1e-3),
        ..Default::default()
    };
    m.scheduled_requests.num_prefill_requests = Count(i % 2);
    m.scheduled_requests.sum_prefill_tokens = Count((i % 2) * (512 + i % 1000));
    m.scheduled_requests.num_decode_requests = Count(64 + i % 32);
    m.scheduled_requests.sum_decode_kv_tokens = Count(90_000 + i % 5000);
    m.queued_requests.num_prefill_requests = Count(3);
    m.queued_requests.sum_prefill_tokens = Count(7000);
    m
}

fn bench(c: &mut Criterion) {
    let frames: Vec<_> = (0..1024).map(frame).collect();
    let registry = Registry::new(
        StateConfig::default(),
        vec![EngineInfo {
            name: "e".into(),
            labels: vec![],
        }],
    );
    let now = registry.now();

    let mut ring = ModelRing::new(60);
    let mut i = 0usize;
    c.bench_function(
        "model update per iteration frame (ModelRing::record)",
        |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                ring.record(now.sec, black_box(&frames[i]));
            })
        },
    );

    let key = RankKey {
        engine: 0,
        worker_id: "bench".into(),
        dp_rank: 0,
    };
    let mut rank = RankState::new(key, Arc::from("tcp://x:1"), &[10, 60], &now);
    let mut seq = 0u64;
    c.bench_function(
        "whole per-frame state update (RankState::apply, model included)",
        |b| {
            b.iter(|| {
                seq += 1;
                rank.apply(
                    black_box(&frames[(seq & 1023) as usize]),
                    seq,
                    SeqEvent::InOrder,
                    &now,
                )
            })
        },
    );

    let mut sums = ModelSums::default();
    for f in &frames {
        sums.push(f);
    }
    c.bench_function(
        "fit of all three models at read time (3 NNLS solves)",
        |b| b.iter(|| ModelKind::ALL.map(|k| black_box(&sums).get(k).fit(k))),
    );

    let ep: Arc<str> = "tcp://x:1".into();
    for r in 0..64u64 {
        let mut cache = RankCache::default();
        let mut f = frame(r);
        f.dp_rank = r;
        registry.ingest(&mut cache, 0, &ep, 0, SeqEvent::First, f, &now);
    }
    c.bench_function("/v1/rank_loads read of 64 ranks (Registry::loads)", |b| {
        b.iter(|| registry.loads(&RankFilter::default()))
    });

    #[derive(serde::Serialize)]
    struct Line<'a> {
        received_at_ns: u64,
        metrics: &'a ForwardPassMetrics,
    }
    let mut buf = Vec::with_capacity(1024);
    c.bench_function(
        "one capture line (the recorder's JSON of received_at_ns + metrics)",
        |b| {
            b.iter(|| {
                buf.clear();
                let line = Line {
                    received_at_ns: 1_795_000_000_000_000_000,
                    metrics: black_box(&frames[7]),
                };
                serde_json::to_writer(&mut buf, &line).unwrap();
                buf.len()
            })
        },
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets -- --test-threads=2` runs
    // this binary with the test harness's flags, which criterion's parser refuses: there,
    // run every benchmark briefly as a smoke test instead.
    let mut c = if std::env::args().any(|a| a == "--bench") {
        Criterion::default()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .configure_from_args()
    } else {
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(10))
            .measurement_time(Duration::from_millis(50))
    };
    bench(&mut c);
    c.final_summary();
}
