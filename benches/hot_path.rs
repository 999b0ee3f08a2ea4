//! Micro-benchmarks of the per-frame hot path, on a real frame (golden `v1_mixed`,
//! captured from the released SGLang publisher): decoding, the statistics update, and
//! both together as the subscriber runs them. `cargo bench --bench hot_path`.

use criterion::{black_box, BatchSize, Criterion};
use fpm_exporter::sink::prometheus::text::Format;
use fpm_exporter::state::rank::{RankKey, RankState};
use fpm_exporter::state::sequence::SeqEvent;
use fpm_exporter::state::{EngineInfo, RankCache, RankFilter, Registry, StateConfig};
use fpm_exporter::wire::decode::decode_payload;
use std::sync::Arc;

fn golden_mixed() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/golden/v1_mixed.msgpack");
    std::fs::read(path).expect("golden v1_mixed")
}

fn registry() -> Arc<Registry> {
    let engines = vec![EngineInfo {
        name: "bench".into(),
        labels: vec![],
    }];
    Registry::new(StateConfig::default(), engines)
}

fn hot_path(c: &mut Criterion) {
    let payload = golden_mixed();
    let metrics = decode_payload(&payload).expect("decodes");
    let endpoint: Arc<str> = "ipc:///bench.0".into();

    c.bench_function("decode v1_mixed", |b| {
        b.iter(|| decode_payload(black_box(&payload)).unwrap())
    });

    {
        let reg = registry();
        let now = reg.now();
        let key = RankKey {
            engine: 0,
            worker_id: metrics.worker_id.as_str().into(),
            dp_rank: 0,
        };
        let mut rank = RankState::new(key, endpoint.clone(), &reg.config.windows, &now);
        let mut seq = 0u64;
        c.bench_function("RankState::apply (windows 10s,60s)", |b| {
            b.iter(|| {
                seq += 1;
                rank.apply(black_box(&metrics), seq, SeqEvent::InOrder, &now)
            })
        });
    }

    {
        let reg = registry();
        let mut cache = RankCache::default();
        let now = reg.now();
        reg.ingest(
            &mut cache,
            0,
            &endpoint,
            0,
            SeqEvent::First,
            metrics.clone(),
            &now,
        );
        let mut seq = 0u64;
        c.bench_function("Registry::ingest (cache hit)", |b| {
            b.iter_batched(
                || metrics.clone(),
                |m| {
                    seq += 1;
                    reg.ingest(&mut cache, 0, &endpoint, seq, SeqEvent::InOrder, m, &now)
                },
                BatchSize::SmallInput,
            )
        });
    }

    {
        let reg = registry();
        let mut cache = RankCache::default();
        let mut seq = 0u64;
        c.bench_function("decode + clock + Registry::ingest", |b| {
            b.iter(|| {
                seq += 1;
                let m = decode_payload(black_box(&payload)).unwrap();
                let now = reg.now();
                let ev = if seq == 1 {
                    SeqEvent::First
                } else {
                    SeqEvent::InOrder
                };
                reg.ingest(&mut cache, 0, &endpoint, seq, ev, m, &now)
            })
        });
    }
}

/// A registry with 1,024 busy ranks (one engine), for the scrape-side benchmarks.
fn busy_registry() -> Arc<Registry> {
    let reg = registry();
    let endpoint: Arc<str> = "ipc:///bench".into();
    let now = reg.now();
    for r in 0..1024u64 {
        let mut model = fpm_exporter::publisher::sim::FrameModel::new("bench-engine-0", r, 7);
        let mut cache = RankCache::default();
        for seq in 0..50 {
            let ev = if seq == 0 {
                SeqEvent::First
            } else {
                SeqEvent::InOrder
            };
            reg.ingest(
                &mut cache,
                0,
                &endpoint,
                seq,
                ev,
                model.next_iteration().clone(),
                &now,
            );
        }
    }
    reg
}

fn scrape(c: &mut Criterion) {
    let reg = busy_registry();
    let mut group = c.benchmark_group("1,024 ranks");
    group.sample_size(20);
    group.bench_function("snapshot", |b| {
        b.iter(|| reg.snapshot(&RankFilter::default()))
    });
    group.bench_function("/metrics render", |b| {
        b.iter(|| fpm_exporter::sink::prometheus::render(&reg, Format::Text, 0.0).len())
    });
    group.finish();
}

// The group function the macro makes is crate-private in use: it needs no doc.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::hot_path, super::scrape);
}
use group::benches;

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    } else {
        // `cargo test --all-targets -- --test-threads=2` runs this target with libtest
        // flags criterion's parser rejects: check the benchmarked path works instead.
        let payload = golden_mixed();
        let m = decode_payload(&payload).expect("v1_mixed decodes");
        assert_eq!(m.scheduled_requests.num_decode_requests.0, 30);
        let reg = registry();
        let mut cache = RankCache::default();
        let endpoint: Arc<str> = "ipc:///bench.0".into();
        let now = reg.now();
        assert!(reg.ingest(&mut cache, 0, &endpoint, 3, SeqEvent::First, m, &now));
        assert_eq!(reg.rank_count(), 1);
    }
}
