//! Hostile and broken input on a live exporter: every malformed message is counted
//! under its reason, nothing crashes, label values stay valid and bounded, the rank
//! count stays capped, and a healthy rank on another endpoint keeps reporting exactly.

mod common;

use bytes::Bytes;
use common::{sample, wait_for, Exporter};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::{Count, ForwardPassMetrics, Real, ScheduledRequests};
use std::collections::BTreeMap;
use std::time::Duration;

#[path = "hostile/payloads.rs"]
mod payloads;
use payloads::*;

async fn endpoint_errors(exp: &Exporter, engine: &str) -> BTreeMap<String, f64> {
    let m = exp.metrics().await;
    let mut out = BTreeMap::new();
    for line in m
        .lines()
        .filter(|l| l.starts_with("fpm_decode_errors_total{"))
    {
        if !line.contains(&format!("engine=\"{engine}\"")) {
            continue;
        }
        let reason = line
            .split("reason=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        *out.entry(reason).or_default() += value;
    }
    out
}

/// Sends valid heartbeats as `worker_id` until the exporter has seen that rank: the
/// subscription is then established and nothing sent afterwards is lost to it.
async fn until_subscribed(
    exp: &Exporter,
    publisher: &mut FramePublisher,
    engine: &str,
    worker_id: &str,
) {
    let mut hb = ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        ..Default::default()
    };
    for _ in 0..200 {
        publisher.send(&mut hb).await.unwrap();
        let m = exp.metrics().await;
        if sample(
            &m,
            "fpm_frames_total",
            &[("engine", engine), ("worker_id", worker_id)],
        )
        .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{engine} never subscribed");
}

fn two_engine_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("engines.toml");
    std::fs::write(
        &cfg,
        format!(
            "{extra}\n[[engine]]\nname = \"hostile\"\nendpoint = \"ipc://{d}/h\"\n\
             [[engine]]\nname = \"healthy\"\nendpoint = \"ipc://{d}/ok\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_counted_by_reason_and_spare_a_healthy_rank() {
    let dir = common::ipc_dir();
    let cfg = two_engine_config(dir.path(), "");
    let mut bad = FramePublisher::bind(&format!("ipc://{}/h.0", dir.path().display()))
        .await
        .unwrap();
    let mut ok = FramePublisher::bind(&format!("ipc://{}/ok.0", dir.path().display()))
        .await
        .unwrap();
    let exp = Exporter::start(&["--config", cfg.to_str().unwrap()]).await;
    until_subscribed(&exp, &mut bad, "hostile", "probe").await;
    until_subscribed(&exp, &mut ok, "healthy", "good").await;

    // Each case, three times, counted exactly under its reason.
    let cases = cases();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (name, frames, reason) in &cases {
        for _ in 0..3 {
            bad.send_frames(frames.clone()).await.unwrap();
        }
        *expected.entry(reason.to_string()).or_default() += 3.0;
        let want = expected.clone();
        let got = wait_for(
            &format!("case {name:?} counted as {reason}"),
            Duration::from_secs(5),
            || async {
                let got = endpoint_errors(&exp, "hostile").await;
                want.iter()
                    .all(|(r, n)| got.get(r) >= Some(n))
                    .then_some(got)
            },
        )
        .await;
        for (r, n) in &got {
            assert_eq!(
                expected.get(r).copied().unwrap_or(0.0),
                *n,
                "after {name:?}: reason {r}"
            );
        }
    }
    // None of them became a rank or a frame: only the probe exists on the hostile engine.
    let m = exp.metrics().await;
    assert_eq!(sample(&m, "fpm_exporter_ranks_tracked", &[]), Some(2.0));
    assert_eq!(
        sample(&m, "fpm_iterations_total", &[("engine", "hostile")]),
        Some(0.0)
    );

    // The cases took a while: the healthy rank has been silent, so its socket may be
    // re-created by now. Its 400 iterations go out once, so first make sure they meet
    // a live subscription (its silence timer restarts with this heartbeat).
    until_subscribed(&exp, &mut ok, "healthy", "good").await;
    // Flood with every case while the healthy rank publishes 400 iterations.
    let flood = tokio::spawn(async move {
        let all = self::cases();
        for _ in 0..150 {
            for (_, frames, _) in &all {
                bad.send_frames(frames.clone()).await.unwrap();
            }
            tokio::task::yield_now().await;
        }
        bad
    });
    for i in 0..400u64 {
        ok.send(&mut busy("good", i)).await.unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let bad = flood.await.unwrap();
    let l = [("engine", "healthy"), ("worker_id", "good")];
    let m = wait_for(
        "all 400 healthy iterations",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_iterations_total", &l) == Some(400.0)).then_some(m)
        },
    )
    .await;
    assert_eq!(sample(&m, "fpm_missed_frames_total", &l), Some(0.0));
    assert_eq!(
        sample(&m, "fpm_last_scheduled_prefill_tokens", &l),
        Some(399.0)
    );
    assert_eq!(
        sample(&m, "fpm_prefill_tokens_total", &l),
        Some((0..400).sum::<u64>() as f64)
    );
    let healthy_errors: f64 = endpoint_errors(&exp, "healthy").await.values().sum();
    assert_eq!(healthy_errors, 0.0);
    // Every hostile message received is accounted for: skipped by reason, or the probe's frames.
    let m = wait_for(
        "the flood fully received",
        Duration::from_secs(10),
        || async {
            let m = exp.metrics().await;
            let msgs = sample(&m, "fpm_endpoint_messages_total", &[("engine", "hostile")]).unwrap();
            let frames = sample(&m, "fpm_frames_total", &[("engine", "hostile")]).unwrap();
            let errs: f64 = endpoint_errors(&exp, "hostile").await.values().sum();
            (errs + frames == msgs && errs >= (3 + 150) as f64 * cases.len() as f64 * 0.5)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(sample(&m, "fpm_exporter_ranks_tracked", &[]), Some(2.0));
    let (status, _) = exp.get("/v1/ranks").await;
    assert_eq!(status, 200);
    bad.close().await;
    ok.close().await;
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_worker_ids_keep_metrics_valid_escaped_and_capped() {
    let dir = common::ipc_dir();
    let addr = format!("ipc://{}/w", dir.path().display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    let exp = Exporter::start(&["--endpoint", &addr, "--engine", "e"]).await;
    until_subscribed(&exp, &mut p, "e", "probe").await;
    let ids: Vec<Vec<u8>> = vec![
        b"q\"uo\"te".to_vec(),
        b"back\\slash\\".to_vec(),
        b"new\nline\r\n".to_vec(),
        vec![b'b', b'a', b'd', 0xff, 0xfe, 0xc3, 0x28, b'!'],
        "x".repeat(10 * 1024).into_bytes(),
        format!("{}\"\\\n", "é".repeat(3000)).into_bytes(),
    ];
    for id in &ids {
        let payload = fpm(id, V::F(0.01), V::U(2));
        p.send_frames(msg(payload)).await.unwrap();
    }
    let m = wait_for(
        "every hostile worker_id tracked",
        Duration::from_secs(5),
        || async {
            let m = exp.metrics().await;
            (sample(&m, "fpm_exporter_ranks_tracked", &[]) == Some(1.0 + ids.len() as f64))
                .then_some(m)
        },
    )
    .await;
    let (ok, report) = common::promtool_check(&m);
    assert!(ok, "promtool check metrics failed:\n{report}");
    // The OpenMetrics form of the same, through a strict parser.
    let om = common::openmetrics_body(&exp.url).await;
    if let Err(e) = common::openmetrics_check(&om) {
        panic!("strict OpenMetrics parser rejected hostile worker_ids: {e}");
    }
    assert!(m.contains(r#"worker_id="q\"uo\"te""#), "quotes escaped");
    assert!(
        m.contains(r#"worker_id="back\\slash\\""#),
        "backslashes escaped"
    );
    assert!(m.contains(r#"worker_id="new\nline"#), "newlines escaped");
    assert!(
        m.contains("worker_id=\"bad\u{fffd}\u{fffd}\u{fffd}(!\""),
        "invalid UTF-8 replaced"
    );
    for line in m.lines().filter(|l| l.starts_with("fpm_frames_total{")) {
        let v = line.split("worker_id=\"").nth(1).unwrap();
        // Up to the closing quote (escaped quotes are preceded by a backslash).
        let mut end = 0;
        let b = v.as_bytes();
        while !(b[end] == b'"' && (end == 0 || b[end - 1] != b'\\')) {
            end += 1;
        }
        let unescaped = v[..end]
            .replace("\\\\", "\\")
            .replace("\\\"", "\"")
            .replace("\\n", "\n");
        assert!(
            unescaped.len() <= 128,
            "label value of {} bytes: {line:.200}",
            unescaped.len()
        );
    }
    // The JSON side carries the same capped values and stays parseable.
    let snap = exp.ranks("").await;
    assert_eq!(snap["ranks"].as_array().unwrap().len(), 1 + ids.len());
    p.close().await;
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_integers_are_accepted_without_wrapping_or_poisoning_statistics() {
    let dir = common::ipc_dir();
    let addr = format!("ipc://{}/x", dir.path().display());
    let mut p = FramePublisher::bind(&format!("{addr}.0")).await.unwrap();
    // Full detail: the window variance below is a full-only family.
    let exp = Exporter::start(&[
        "--endpoint",
        &addr,
        "--engine",
        "e",
        "--rank-detail",
        "full",
    ])
    .await;
    until_subscribed(&exp, &mut p, "e", "probe").await;
    // u64::MAX is a valid count on the wire; three of them must saturate, not wrap.
    for _ in 0..3 {
        p.send_frames(msg(fpm(b"big", V::F(0.01), V::U(u64::MAX))))
            .await
            .unwrap();
    }
    let l = [("engine", "e"), ("worker_id", "big")];
    let m = wait_for("three extreme frames", Duration::from_secs(5), || async {
        let m = exp.metrics().await;
        (sample(&m, "fpm_iterations_total", &l) == Some(3.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(&m, "fpm_decode_request_iterations_total", &l),
        Some(u64::MAX as f64)
    );
    assert_eq!(
        sample(&m, "fpm_last_scheduled_decode_requests", &l),
        Some(u64::MAX as f64)
    );
    for line in m.lines().filter(|l| l.contains("worker_id=\"big\"")) {
        let v = line.rsplit_once(' ').unwrap().1;
        assert!(
            !v.contains("NaN") && !v.contains("Inf"),
            "non-finite sample: {line}"
        );
    }
    let mut wl = l.to_vec();
    wl.extend([
        ("window", "60s"),
        ("field", "scheduled_requests.num_decode_requests"),
    ]);
    assert_eq!(sample(&m, "fpm_window_mean", &wl), Some(u64::MAX as f64));
    assert_eq!(sample(&m, "fpm_window_variance", &wl), Some(0.0));
    p.close().await;
    exp.stop().await;
}

#[path = "hostile/identities.rs"]
mod identities;
