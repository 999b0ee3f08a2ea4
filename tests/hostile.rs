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

/// A msgpack value for building payloads the encoder would never produce.
#[derive(Clone)]
enum V {
    U(u64),
    I(i64),
    F(f64),
    S(Vec<u8>),
    Map(Vec<(&'static str, V)>),
}

fn write(v: &V, out: &mut Vec<u8>) {
    match v {
        V::U(n) => {
            rmp::encode::write_uint(out, *n).unwrap();
        }
        V::I(n) => {
            rmp::encode::write_sint(out, *n).unwrap();
        }
        V::F(x) => rmp::encode::write_f64(out, *x).unwrap(),
        V::S(b) => {
            rmp::encode::write_str_len(out, b.len() as u32).unwrap();
            out.extend_from_slice(b);
        }
        V::Map(entries) => {
            rmp::encode::write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                rmp::encode::write_str(out, k).unwrap();
                write(v, out);
            }
        }
    }
}

/// A v1 payload with the given worker_id and overrides of wall_time and
/// scheduled_requests.num_decode_requests.
fn fpm(worker_id: &[u8], wall_time: V, decode_requests: V) -> Vec<u8> {
    let v = V::Map(vec![
        ("version", V::U(1)),
        ("worker_id", V::S(worker_id.to_vec())),
        ("dp_rank", V::U(0)),
        ("counter_id", V::U(0)),
        ("wall_time", wall_time),
        (
            "scheduled_requests",
            V::Map(vec![("num_decode_requests", decode_requests)]),
        ),
    ]);
    let mut out = Vec::new();
    write(&v, &mut out);
    out
}

fn msg(payload: impl Into<Bytes>) -> Vec<Bytes> {
    vec![
        Bytes::new(),
        Bytes::copy_from_slice(&7u64.to_be_bytes()),
        payload.into(),
    ]
}

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(common::repo_root().join("proto/golden").join(name)).unwrap()
}

fn busy(worker_id: &str, tokens: u64) -> ForwardPassMetrics {
    ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        wall_time: Real(0.02),
        scheduled_requests: ScheduledRequests {
            num_decode_requests: Count(8),
            sum_prefill_tokens: Count(tokens),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every hostile case: a name, the multipart message, and the reason it must be counted under.
fn cases() -> Vec<(&'static str, Vec<Bytes>, &'static str)> {
    let good = golden("v1_decode.msgpack");
    let nested = {
        // {"x": [[[[...]]]]}: an unknown key whose value nests 200 levels deep.
        let mut p = vec![0x81, 0xa1, b'x'];
        p.extend(std::iter::repeat_n(0x91u8, 200));
        p.push(0x00);
        p
    };
    let huge_str = {
        // worker_id claims 64 MiB (str32 header) but carries 3 bytes.
        let mut p = vec![0x81, 0xa9];
        p.extend_from_slice(b"worker_id");
        p.push(0xdb);
        p.extend_from_slice(&(64u32 << 20).to_be_bytes());
        p.extend_from_slice(b"abc");
        p
    };
    let huge_array = {
        // A top-level array claiming 2^32-1 elements with one present.
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]
    };
    let mut trailing = good.clone();
    trailing.push(0xc0);
    let seq = Bytes::copy_from_slice(&1u64.to_be_bytes());
    vec![
        ("one frame", vec![Bytes::from(good.clone())], "frame_count"),
        (
            "two frames",
            vec![Bytes::new(), Bytes::from(good.clone())],
            "frame_count",
        ),
        (
            "four frames",
            {
                let mut m = msg(good.clone());
                m.push(Bytes::new());
                m
            },
            "frame_count",
        ),
        (
            "hundred frames",
            vec![Bytes::from_static(b"x"); 100],
            "frame_count",
        ),
        (
            "all frames empty",
            vec![Bytes::new(), Bytes::new(), Bytes::new()],
            "sequence_size",
        ),
        (
            "sequence of 7 bytes",
            vec![
                Bytes::new(),
                Bytes::from_static(&[0; 7]),
                Bytes::from(good.clone()),
            ],
            "sequence_size",
        ),
        (
            "sequence of 9 bytes",
            vec![
                Bytes::new(),
                Bytes::from_static(&[0; 9]),
                Bytes::from(good.clone()),
            ],
            "sequence_size",
        ),
        (
            "empty payload",
            vec![Bytes::new(), seq.clone(), Bytes::new()],
            "empty_payload",
        ),
        ("not msgpack", msg(vec![0xc1, 0xc1, 0xc1]), "malformed"),
        (
            "truncated",
            msg(good[..good.len() / 2].to_vec()),
            "truncated",
        ),
        (
            "a string, not a map",
            msg(vec![0xa3, b'a', b'b', b'c']),
            "wrong_shape",
        ),
        ("a bool, not a map", msg(vec![0xc3]), "wrong_shape"),
        (
            "wall_time is a string",
            msg(fpm(b"h", V::S(b"fast".to_vec()), V::U(1))),
            "wrong_shape",
        ),
        ("deep nesting", msg(nested), "too_deep"),
        ("64 MiB string header", msg(huge_str), "truncated"),
        ("2^32 array header", msg(huge_array), "truncated"),
        (
            "1 MiB worker_id",
            msg(fpm(&vec![b'w'; 1 << 20], V::F(0.01), V::U(1))),
            "oversize",
        ),
        ("trailing bytes", msg(trailing), "trailing_bytes"),
        (
            "NaN wall_time",
            msg(fpm(b"h", V::F(f64::NAN), V::U(1))),
            "invalid_value",
        ),
        (
            "+inf wall_time",
            msg(fpm(b"h", V::F(f64::INFINITY), V::U(1))),
            "invalid_value",
        ),
        (
            "-inf wall_time",
            msg(fpm(b"h", V::F(f64::NEG_INFINITY), V::U(1))),
            "invalid_value",
        ),
        (
            "negative wall_time",
            msg(fpm(b"h", V::F(-0.5), V::U(1))),
            "invalid_value",
        ),
        (
            "negative count",
            msg(fpm(b"h", V::F(0.01), V::I(-3))),
            "invalid_value",
        ),
        (
            "i64::MIN count",
            msg(fpm(b"h", V::F(0.01), V::I(i64::MIN))),
            "invalid_value",
        ),
        (
            "wall_time beyond u64",
            msg(fpm(b"h", V::F(1e30), V::U(1))),
            "invalid_value",
        ),
        (
            "count as a float beyond u64",
            msg(fpm(b"h", V::F(0.01), V::F(1e30))),
            "wrong_shape",
        ),
        (
            "unknown version",
            msg(golden("v2_unknown_version.msgpack")),
            "unsupported_version",
        ),
    ]
}

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
