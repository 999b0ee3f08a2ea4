use super::*;
use serde_json::json;

fn snap(rank: u64, state: &str, frames: u64, wall: f64, kv: u64, queued: u64) -> RankSnapshot {
    serde_json::from_value(json!({
        "engine": "e", "worker_id": "w", "dp_rank": rank, "state": state, "age_ms": 5,
        "last": {"wall_time": 0.01,
                 "scheduled_requests": {"num_prefill_requests": 1, "sum_prefill_kv_tokens": 0,
                                        "num_decode_requests": 3, "sum_decode_kv_tokens": kv},
                 "queued_requests": {"num_prefill_requests": queued, "num_decode_requests": 0}},
        "counters": {"frames": frames, "iterations": frames, "wall_time_seconds": wall},
        "windows": {"60s": {"wall_time_quantiles": {"p50": 0.5, "p99": 0.9}},
                    "10s": {"wall_time_quantiles": {"p50": wall, "p99": 1.0},
                            "scheduled_requests": {"sum_prefill_tokens": {"mean": 7.5}}}},
        "straggler": {"10s": {"ratio": 1.25}, "60s": null},
        "extra_field_of_a_newer_exporter": 1
    }))
    .unwrap()
}

#[test]
fn rates_come_from_the_counters_and_the_shortest_window_is_shown() {
    let mut board = Board::default();
    let t0 = Instant::now();
    board.rank(snap(0, "busy", 100, 1.0, 500, 2), t0);
    board.rank(
        snap(0, "busy", 120, 1.4, 600, 2),
        t0 + Duration::from_secs(2),
    );
    let rows = board.rows(t0 + Duration::from_secs(2), true, SortKey::Rank, None);
    let r = &rows[0].1[0];
    assert_eq!(r.fps, Some(10.0));
    assert!((r.history[0] - 0.02).abs() < 1e-12, "{:?}", r.history);
    assert_eq!((r.running, r.queued, r.kv), (4.0, 2.0, 600.0));
    assert_eq!((r.p50, r.p99, r.prefill), (Some(1.4), Some(1.0), Some(7.5)));
    assert_eq!(r.straggler, Some(1.25));
    // An exporter restart resets the counters: no negative rate, no bogus point.
    board.rank(
        snap(0, "busy", 3, 0.05, 600, 2),
        t0 + Duration::from_secs(3),
    );
    let r = &board.rows(t0 + Duration::from_secs(3), true, SortKey::Rank, None)[0].1[0];
    assert_eq!((r.fps, r.history.len()), (None, 1));
    board.rank(
        snap(0, "busy", 13, 0.15, 600, 2),
        t0 + Duration::from_secs(4),
    );
    board.new_stream();
    let r = &board.rows(t0 + Duration::from_secs(4), true, SortKey::Rank, None)[0].1[0];
    assert_eq!(r.fps, None, "a rate never spans two streams");
}

#[test]
fn a_rank_missing_from_a_live_stream_or_expired_is_down_and_idle_has_no_load() {
    let mut board = Board::default();
    let t0 = Instant::now();
    board.rank(snap(0, "busy", 1, 0.1, 500, 0), t0);
    board.rank(snap(1, "idle", 1, 0.1, 500, 3), t0);
    board.rank(snap(2, "stale", 1, 0.1, 500, 3), t0);
    let later = t0 + DOWN_AFTER + Duration::from_millis(1);
    board.rank(snap(1, "idle", 2, 0.1, 500, 3), later);
    board.rank(snap(2, "stale", 2, 0.1, 500, 3), later);
    let states = |b: &Board, live| -> Vec<State> {
        b.rows(later, live, SortKey::Rank, None)[0]
            .1
            .iter()
            .map(|r| r.state)
            .collect()
    };
    assert_eq!(
        states(&board, true),
        [State::Down, State::Idle, State::Stale]
    );
    // While reconnecting, silence is the stream's, not the rank's.
    assert_eq!(
        states(&board, false),
        [State::Busy, State::Idle, State::Stale]
    );
    let rows = board.rows(later, true, SortKey::Rank, None);
    assert_eq!((rows[0].1[1].kv, rows[0].1[1].queued), (0.0, 0.0), "idle");
    assert_eq!(
        (rows[0].1[2].kv, rows[0].1[2].queued),
        (500.0, 3.0),
        "stale keeps its load"
    );
    board.state(
        serde_json::from_value(json!({"engine": "e", "worker_id": "w", "dp_rank": 1,
        "from": "idle", "to": "expired", "at_ns": 1}))
        .unwrap(),
    );
    assert_eq!(states(&board, true)[1], State::Down);
    let totals = board.totals(later, true);
    assert_eq!(totals.states, [0, 0, 1, 2]);
}

#[test]
fn sort_keys_order_rows_inside_their_engine() {
    let mut board = Board::default();
    let t0 = Instant::now();
    for (rank, kv, queued, wall) in [(0, 100, 5, 0.3), (1, 900, 1, 0.1), (2, 500, 9, 0.2)] {
        board.rank(snap(rank, "busy", 1, wall, kv, queued), t0);
    }
    let order = |key| -> Vec<u64> {
        board.rows(t0, true, key, None)[0]
            .1
            .iter()
            .map(|r| r.dp_rank)
            .collect()
    };
    assert_eq!(order(SortKey::Rank), [0, 1, 2]);
    assert_eq!(order(SortKey::Work), [1, 2, 0]);
    assert_eq!(order(SortKey::Wall), [0, 2, 1]);
    assert_eq!(order(SortKey::Queue), [2, 0, 1]);
    assert!(board
        .rows(t0, true, SortKey::Rank, Some("other"))
        .is_empty());
}

#[test]
fn the_engines_own_kv_use_joins_its_rank() {
    let mut board = Board::default();
    let t0 = Instant::now();
    board.rank(snap(0, "busy", 1, 0.1, 500, 0), t0);
    board.rank(snap(1, "busy", 1, 0.1, 500, 0), t0);
    board.loads(
        serde_json::from_value(json!({"generated_at_ns": 1, "ranks": [
            {"engine": "e", "worker_id": "w", "dp_rank": 1, "token_usage": 0.25},
            {"engine": "e", "worker_id": "w", "dp_rank": 0, "token_usage": null},
            {"engine": "other", "worker_id": "w", "dp_rank": 0, "token_usage": 0.5}]}))
        .unwrap(),
    );
    let rows = board.rows(t0, true, SortKey::Rank, None);
    let usage: Vec<Option<f64>> = rows[0].1.iter().map(|r| r.usage).collect();
    assert_eq!(usage, [None, Some(0.25)]);
}
