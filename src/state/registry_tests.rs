//! Registry behaviour that depends on timing: the sweeper racing a frame, and wall-clock
//! stamps following clock corrections.

use super::*;
use crate::state::rank::Liveness;
use crate::state::sequence::SeqEvent;
use crate::wire::ForwardPassMetrics;
use crate::wire::{Count, Real};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn frame() -> ForwardPassMetrics {
    let mut m = ForwardPassMetrics {
        version: 1,
        worker_id: "w".into(),
        dp_rank: 0,
        ..Default::default()
    };
    m.wall_time = Real(0.02);
    m.scheduled_requests.num_decode_requests = Count(4);
    m
}

fn engines() -> Vec<EngineInfo> {
    vec![EngineInfo {
        name: "e".into(),
        labels: vec![],
    }]
}

/// A frame that arrives after the sweeper picked its rank as expired (read lock) and
/// before it removes it (write lock) keeps the rank alive with its counters.
#[test]
fn frame_between_the_sweep_phases_keeps_its_rank() {
    let config = StateConfig {
        stale_after: Duration::from_secs(1),
        expire_after: Duration::from_secs(2),
        ..Default::default()
    };
    let reg = Registry::new(config, engines());
    let ep: Arc<str> = "tcp://x:1".into();
    let mut cache = RankCache::default();
    let t0 = Instant::now();
    assert!(reg.ingest(&mut cache, 0, &ep, 0, SeqEvent::First, frame(), &reg.at(t0)));

    let sweep_at = reg.at(t0 + Duration::from_secs(3));
    let candidates = reg.mark_stale(&sweep_at);
    assert_eq!(
        candidates.len(),
        1,
        "silent past expiry when the sweeper looked"
    );
    let frame_at = reg.at(t0 + Duration::from_secs(3) + Duration::from_millis(1));
    assert!(reg.ingest(&mut cache, 0, &ep, 1, SeqEvent::InOrder, frame(), &frame_at));
    reg.remove_expired(candidates, &sweep_at);

    assert_eq!(reg.rank_count(), 1);
    assert_eq!(reg.expired[0].load(Relaxed), 0);
    let snap = reg.snapshot(&RankFilter::default());
    assert_eq!(
        snap.ranks[0].counters.frames, 2,
        "no counter restarted from zero"
    );
    assert_eq!(snap.ranks[0].liveness, Liveness::Busy);

    // Silent again past expiry: now it goes.
    reg.sweep(&reg.at(t0 + Duration::from_secs(6)));
    assert_eq!(reg.rank_count(), 0);
    assert_eq!(reg.expired[0].load(Relaxed), 1);
}

/// Wall time is read where it is reported: a clock step (NTP) shows in the next frame's
/// stamps, while windows stay on the monotonic clock.
#[test]
fn wall_stamps_follow_a_clock_step_windows_do_not() {
    let wall = Arc::new(AtomicU64::new(1_700_000_000_000_000_000));
    let clock = wall.clone();
    let reg = Registry::with_wall_clock(
        StateConfig::default(),
        engines(),
        Arc::new(move || clock.load(Relaxed)),
    );
    let ep: Arc<str> = "tcp://x:1".into();
    let mut cache = RankCache::default();
    let mut rx = reg.subscribe();
    assert!(reg.ingest(&mut cache, 0, &ep, 0, SeqEvent::First, frame(), &reg.now()));
    let first = reg.snapshot(&RankFilter::default());
    assert_eq!(first.ranks[0].last_frame_unix_ns, 1_700_000_000_000_000_000);

    // The clock is stepped back an hour (monotonic time barely moves).
    let stepped = 1_700_000_000_000_000_000 - 3_600_000_000_000;
    wall.store(stepped, Relaxed);
    assert!(reg.ingest(
        &mut cache,
        0,
        &ep,
        1,
        SeqEvent::InOrder,
        frame(),
        &reg.now()
    ));
    let snap = reg.snapshot(&RankFilter::default());
    let r = &snap.ranks[0];
    assert_eq!(r.last_frame_unix_ns, stepped);
    assert_eq!(r.last.as_ref().unwrap().received_at_ns, stepped);
    assert_eq!(snap.at_unix_ns, stepped);
    assert_eq!(
        r.windows[0].moments.count, 2,
        "both frames stay in the window"
    );
    // The default two windows live inside the rank's snapshot: no block per rank.
    assert_eq!(r.windows.len(), 2);
    assert!(!r.windows.spilled());
    let stamps: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|e| match e.kind {
            EventKind::Frame { received_at_ns, .. } => Some(received_at_ns),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, [1_700_000_000_000_000_000, stepped]);

    // `at` shifts the current wall time by the distance from now.
    let later = reg.at(Instant::now() + Duration::from_secs(5));
    assert!(later.unix_ns >= stepped + 4_900_000_000 && later.unix_ns <= stepped + 5_000_000_000);
}

/// The sweeper asks the sources for what they hold before it ages a rank: a rank whose
/// frame waits in a source stays live; one whose source holds nothing turns stale.
#[tokio::test]
async fn ageing_first_takes_in_what_the_sources_hold() {
    let config = StateConfig {
        stale_after: Duration::from_millis(50),
        expire_after: Duration::from_secs(60),
        ..Default::default()
    };
    let reg = Registry::new(config, engines());
    let ep: Arc<str> = "tcp://x:1".into();
    let mut cache = RankCache::default();
    assert!(reg.ingest(&mut cache, 0, &ep, 0, SeqEvent::First, frame(), &reg.now()));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(reg.aging_due(&reg.now()));
    // A source holding the rank's next frame: it folds it in when asked.
    let held = Arc::new(parking_lot::Mutex::new(Some((cache, ep.clone()))));
    let weak = Arc::downgrade(&reg);
    let source = held.clone();
    reg.add_intake(Arc::new(move || {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let (Some(reg), Some((mut cache, ep))) = (weak.upgrade(), source.lock().take()) {
            reg.ingest(
                &mut cache,
                0,
                &ep,
                1,
                SeqEvent::InOrder,
                frame(),
                &reg.now(),
            );
        }
        let _ = tx.send(());
        Some(rx)
    }));
    reg.age().await;
    let live = reg.snapshot(&RankFilter::default()).ranks[0].liveness;
    assert_eq!(live, Liveness::Busy, "the held frame kept it live");
    assert!(held.lock().is_none(), "the source was asked");
    // Nothing more held: silent past stale_after, it turns stale.
    tokio::time::sleep(Duration::from_millis(80)).await;
    reg.age().await;
    let live = reg.snapshot(&RankFilter::default()).ranks[0].liveness;
    assert_eq!(live, Liveness::Stale);
    assert!(
        !reg.aging_due(&reg.now()),
        "stale and not yet expired: nothing due"
    );
}
