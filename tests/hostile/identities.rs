//! A publisher cycling through thousands of identities: capped at `--max-ranks`,
//! counted as refused, expired in time, and room made for new ranks.

use super::*;

/// One exporter with `--max-ranks 50` and short stale/expiry times, its publisher,
/// and the exposition once 3000 identities (1000 worker_ids x 3 dp_ranks) sent once
/// have all been received. `None` when the burst met a socket re-creation: with
/// `--stale-after 500ms` a silent socket is re-created within about a second, and
/// frames sent while that happens meet no subscriber. The caller then starts over.
async fn capped_burst(dir: &std::path::Path) -> Option<(Exporter, FramePublisher, String)> {
    let addr = format!("ipc://{}/c", dir.display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    let exp = Exporter::start(&[
        "--endpoint",
        &addr,
        "--engine",
        "e",
        "--max-ranks",
        "50",
        "--stale-after",
        "500ms",
        "--expire-after",
        "1500ms",
    ])
    .await;
    until_subscribed(&exp, &mut p, "e", "probe").await;
    let e = [("engine", "e")];
    let connects = sample(&exp.metrics().await, "fpm_endpoint_connects_total", &e).unwrap();
    for i in 0..3000u64 {
        let mut f = busy(&format!("rogue-{}", i / 3), 1);
        f.dp_rank = i % 3;
        p.send(&mut f).await.unwrap();
    }
    let (complete, m) = wait_for(
        "all 3000 frames received, or a re-created socket",
        Duration::from_secs(30),
        || async {
            let m = exp.metrics().await;
            let msgs = sample(&m, "fpm_endpoint_messages_total", &e).unwrap();
            let refused = sample(&m, "fpm_exporter_refused_frames_total", &[]).unwrap();
            let frames: f64 = m
                .lines()
                .filter(|l| l.starts_with("fpm_frames_total{"))
                .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
                .sum();
            let complete = refused > 0.0 && frames + refused == msgs && msgs >= 3000.0;
            let recreated = sample(&m, "fpm_endpoint_connects_total", &e).unwrap() > connects;
            (complete || recreated).then_some((complete, m))
        },
    )
    .await;
    if complete {
        return Some((exp, p, m));
    }
    eprintln!("the burst met a socket re-creation; starting over");
    p.close().await;
    exp.stop().await;
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycling_identities_are_capped_then_expire_and_make_room() {
    let dir = common::ipc_dir();
    let mut attempt = None;
    for _ in 0..3 {
        attempt = capped_burst(dir.path()).await;
        if attempt.is_some() {
            break;
        }
    }
    let (exp, mut p, m) = attempt.expect("3 bursts in a row met a socket re-creation");
    assert_eq!(sample(&m, "fpm_exporter_ranks_tracked", &[]), Some(50.0));
    assert_eq!(sample(&m, "fpm_exporter_ranks_limit", &[]), Some(50.0));
    let refused = sample(&m, "fpm_exporter_refused_frames_total", &[]).unwrap();
    assert_eq!(
        refused,
        3000.0 - 49.0,
        "the probe and the first 49 identities were admitted"
    );
    assert_eq!(
        m.lines()
            .filter(|l| l.starts_with("fpm_frames_total{"))
            .count(),
        50
    );

    // Silence: every identity expires, and new ones are admitted again.
    wait_for("all ranks expired", Duration::from_secs(20), || async {
        let m = exp.metrics().await;
        (sample(&m, "fpm_exporter_ranks_tracked", &[]) == Some(0.0)).then_some(())
    })
    .await;
    // The silent socket is being re-created over and over by now, so a frame sent once
    // may meet no subscriber: send each fresh identity until the exporter has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = exp.metrics().await;
        let missing: Vec<u64> = (0..10u64)
            .filter(|i| {
                let w = format!("fresh-{i}");
                sample(&m, "fpm_frames_total", &[("worker_id", w.as_str())]).is_none()
            })
            .collect();
        if missing.is_empty() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fresh identities {missing:?} not admitted in 30 s"
        );
        for i in missing {
            p.send(&mut busy(&format!("fresh-{i}"), 1)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every fresh identity is tracked (a straggler of the flood may be too), and none
    // was refused: expiry made room.
    assert_eq!(
        sample(&m, "fpm_exporter_refused_frames_total", &[]),
        Some(refused)
    );
    assert!(sample(&m, "fpm_exporter_ranks_tracked", &[]).unwrap() >= 10.0);
    p.close().await;
    exp.stop().await;
}
