//! The balance and straggler figures of a snapshot against the definitions computed by
//! hand from the frames fed (docs/metrics.md, "Imbalance and stragglers").

use super::imbalance::MEASURES;
use super::sequence::SeqEvent;
use super::*;
use crate::wire::{Count, ForwardPassMetrics, Real};
use std::sync::Arc;

/// An iteration of rank `rank` with the given work and wall_time.
fn frame(
    rank: u64,
    wall: f64,
    prefill: u64,
    decode: u64,
    kv: u64,
    queued: u64,
) -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: "w".into(),
        dp_rank: rank,
        wall_time: Real(wall),
        ..Default::default()
    };
    let s = &mut m.scheduled_requests;
    s.sum_prefill_tokens = Count(prefill);
    s.num_decode_requests = Count(decode);
    s.sum_decode_kv_tokens = Count(kv);
    m.queued_requests.num_prefill_requests = Count(queued);
    m.queued_requests.num_decode_requests = Count(1);
    m
}

fn registry(engines: &[&str]) -> Arc<Registry> {
    Registry::new(
        StateConfig::default(),
        engines
            .iter()
            .map(|n| EngineInfo {
                name: n.to_string(),
                labels: vec![],
            })
            .collect(),
    )
}

fn feed(reg: &Registry, engine: usize, frames: &[ForwardPassMetrics]) {
    let ep: Arc<str> = "ipc:///x".into();
    let mut caches: std::collections::HashMap<u64, (RankCache, u64)> = Default::default();
    for m in frames {
        let (cache, seq) = caches.entry(m.dp_rank).or_default();
        let ev = if *seq == 0 {
            SeqEvent::First
        } else {
            SeqEvent::InOrder
        };
        assert!(reg.ingest(cache, engine, &ep, *seq, ev, m.clone(), &reg.now()));
        *seq += 1;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn balance_and_stragglers_equal_their_definitions() {
    let reg = registry(&["e", "one"]);
    // Rank r runs two iterations; rank 2 twice the prefill of the others on average,
    // rank 1 slower per token. Means per iteration, by hand:
    //   prefill   r0 (100+300)/2=200  r1 200  r2 (300+500)/2=400  r3 200
    //   decode    r0 10  r1 10  r2 10  r3 (10+30)/2=20
    //   kv        r0 1000 r1 1000 r2 1000 r3 1000
    //   queued    r0 2+1=3  r1 0+1=1  r2 1  r3 1
    //   wall      r0 0.021 r1 0.042 r2 0.041 r3 0.022
    let frames = [
        frame(0, 0.020, 100, 10, 1000, 2),
        frame(0, 0.022, 300, 10, 1000, 2),
        frame(1, 0.042, 200, 10, 1000, 0),
        frame(1, 0.042, 200, 10, 1000, 0),
        frame(2, 0.040, 300, 10, 1000, 0),
        frame(2, 0.042, 500, 10, 1000, 0),
        frame(3, 0.022, 200, 10, 1000, 0),
        frame(3, 0.022, 200, 30, 1000, 0),
    ];
    feed(&reg, 0, &frames);
    // A second engine with one rank: never a balance, never a straggler ratio.
    feed(&reg, 1, &[frame(0, 0.02, 100, 10, 1000, 0)]);
    let snap = reg.snapshot(&RankFilter::default());
    for w in 0..2 {
        let b = &snap.engines[0].balance[w];
        assert_eq!(b.ranks, 4);
        let by = |name: &str| {
            let i = MEASURES.iter().position(|m| m.as_str() == name).unwrap();
            b.measures[i]
                .clone()
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let p = by("prefill_tokens");
        let mean = (200.0 + 200.0 + 400.0 + 200.0) / 4.0;
        assert!(close(p.mean, mean) && close(p.max, 400.0), "{p:?}");
        assert!(close(p.ratio, 400.0 / mean));
        assert_eq!(p.heaviest.dp_rank, 2);
        assert!(close(p.lockstep_wait.unwrap(), 1.0 - mean / 400.0));
        let d = by("decode_requests");
        assert_eq!(d.heaviest.dp_rank, 3);
        assert!(close(d.ratio, 20.0 / 12.5));
        let k = by("decode_kv_tokens");
        assert_eq!(
            (k.ratio, k.heaviest.dp_rank, k.lockstep_wait),
            (1.0, 0, Some(0.0))
        );
        let q = by("queued_requests");
        assert!(close(q.ratio, 3.0 / 1.5) && q.heaviest.dp_rank == 0);
        assert_eq!(q.lockstep_wait, None, "queued work is not executed");

        // Seconds per token: wall / (prefill + decode).
        let spt = [0.021 / 210.0, 0.042 / 210.0, 0.041 / 410.0, 0.022 / 220.0];
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        };
        for r in 0..4 {
            let s = snap.ranks[r].straggler[w].unwrap();
            assert!(close(s.seconds_per_token, spt[r]), "rank {r}: {s:?}");
            let others: Vec<f64> = (0..4).filter(|&o| o != r).map(|o| spt[o]).collect();
            assert!(
                close(s.ratio.unwrap(), spt[r] / median(others)),
                "rank {r}: {s:?}"
            );
        }
        assert!(snap.ranks[1].straggler[w].unwrap().ratio.unwrap() > 1.9);
        let one = &snap.engines[1].balance[w];
        assert_eq!(one.ranks, 1);
        assert!(one.measures.iter().all(Option::is_none));
        let lone = snap.ranks[4].straggler[w].unwrap();
        assert_eq!(lone.ratio, None);
    }
}

#[test]
fn idle_stale_and_workless_ranks_are_left_out() {
    let reg = registry(&["e"]);
    feed(
        &reg,
        0,
        &[
            frame(0, 0.02, 0, 10, 1000, 0),
            frame(1, 0.02, 0, 30, 1000, 0),
            // Rank 2 only heartbeats: no iteration in the window.
            ForwardPassMetrics {
                version: 1,
                worker_id: "w".into(),
                dp_rank: 2,
                ..Default::default()
            },
        ],
    );
    let snap = reg.snapshot(&RankFilter::default());
    let b = &snap.engines[0].balance[0];
    assert_eq!(b.ranks, 2, "the heartbeat-only rank is not counted");
    assert!(
        b.measures[0].is_none(),
        "no rank prefilled: no prefill balance"
    );
    let d = b.measures[1].as_ref().unwrap();
    assert_eq!((d.ratio, d.heaviest.dp_rank), (30.0 / 20.0, 1));
    assert_eq!(snap.ranks[2].straggler[0], None);

    // Rank 1 goes stale: one counted rank is left, so no balance at all.
    let later = reg.at(std::time::Instant::now() + std::time::Duration::from_secs(6));
    reg.mark_stale(&later);
    let snap = reg.snapshot(&RankFilter::default());
    assert!(snap
        .ranks
        .iter()
        .all(|r| r.liveness == rank::Liveness::Stale));
    let b = &snap.engines[0].balance[0];
    assert_eq!(b.ranks, 0);
    assert!(b.measures.iter().all(Option::is_none));
    assert!(snap.ranks.iter().all(|r| r.straggler[0].is_none()));
}
