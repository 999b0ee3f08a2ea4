//! Remote fan-in (`--scrape`) against real workers: `prometheus_client`'s own HTTP
//! server over a single-process and a multiprocess registry, a server of the SMG
//! fixture, one on IPv6 loopback, dp-aware duplicates; and faulty workers (down,
//! 30 s slow, 50 MB body, garbage). Values are checked against numbers computed here
//! from what tests/py/scrape_worker.py was told to record.

mod common;

use common::scrape_worker::Worker;
use common::{sample, wait_for, Exporter};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What scrape_worker.py records (its PATHS, OBSERVATIONS, BUCKETS).
const PATHS: [&str; 5] = ["/a", "q\\\"uote", "back\\\\slash", "new\\nline", "ünï"];
const OBSERVATIONS: [f64; 4] = [0.05, 0.3, 2.0, 7.0];
const BUCKETS: [(&str, f64); 4] = [
    ("0.1", 0.1),
    ("1.0", 1.0),
    ("5.0", 5.0),
    ("+Inf", f64::INFINITY),
];

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/smg-engine-metrics-sample.prom",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Every sample line's `name{labels}`, asserting none appears twice.
fn series(body: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let key = l.rsplit_once(' ').unwrap().0.to_owned();
        assert!(seen.insert(key.clone()), "duplicate series {key}");
    }
    seen
}

/// The known values of a `single`/`multiproc` worker, under `labels`.
fn assert_known_values(body: &str, labels: &[(&str, &str)]) {
    for (i, p) in PATHS.iter().enumerate() {
        let mut l = labels.to_vec();
        l.push(("path", p));
        let v = sample(body, "requests_total", &l);
        assert_eq!(
            v,
            Some(3.0 * (i + 1) as f64),
            "requests_total{{path={p}}} {labels:?}"
        );
    }
    assert_eq!(sample(body, "queue_depth", labels), Some(42.5));
    for (le, bound) in BUCKETS {
        let mut l = labels.to_vec();
        l.push(("le", le));
        let want = OBSERVATIONS.iter().filter(|o| **o <= bound).count() as f64;
        assert_eq!(
            sample(body, "latency_seconds_bucket", &l),
            Some(want),
            "le={le}"
        );
    }
    let count = OBSERVATIONS.len() as f64;
    let sum: f64 = OBSERVATIONS.iter().sum();
    assert_eq!(sample(body, "latency_seconds_count", labels), Some(count));
    assert_eq!(sample(body, "latency_seconds_sum", labels), Some(sum));
}

async fn up(e: &Exporter, addr: &str) -> Option<f64> {
    sample(
        &e.metrics().await,
        "fpm_engine_scrape_up",
        &[("worker_addr", addr)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_workers_fan_in_with_their_labels_and_no_duplicates() {
    let mp_dir = tempfile::tempdir().unwrap();
    let single = Worker::spawn("single", &[]);
    let multi = Worker::spawn("multiproc", &["--dir", mp_dir.path().to_str().unwrap()]);
    let fix = Worker::spawn("file", &["--file", &fixture()]);
    let v6 = Worker::spawn("single", &["--host", "::1"]);
    let a_single = format!("http://127.0.0.1:{}/metrics", single.port);
    let a_multi = format!("http://127.0.0.1:{}/metrics", multi.port);
    let a_fix = format!("http://127.0.0.1:{}/metrics", fix.port);
    let a_v6 = format!("http://[::1]:{}/metrics", v6.port);
    let args = [
        format!("http://127.0.0.1:{}", single.port),
        format!("grpc://127.0.0.1:{}@0", multi.port),
        format!("grpc://127.0.0.1:{}@1", multi.port),
        format!("127.0.0.1:{}", multi.port),
        format!("127.0.0.1:{}", fix.port),
        format!("http://[0:0::1]:{}", v6.port),
    ];
    let mut argv = vec![
        "--engine",
        "sg",
        "--label",
        "role=decode",
        "--scrape-interval",
        "300ms",
    ];
    for a in &args {
        argv.extend(["--scrape", a.as_str()]);
    }
    let e = Exporter::start(&argv).await;
    for a in [&a_single, &a_multi, &a_fix, &a_v6] {
        wait_for("every worker up", Duration::from_secs(20), || async {
            (up(&e, a).await == Some(1.0)).then_some(())
        })
        .await;
    }
    let m = e.metrics().await;
    // Four distinct URLs out of six addresses: the dp ranks and the bare form collapse.
    let ups = m
        .lines()
        .filter(|l| l.starts_with("fpm_engine_scrape_up{"))
        .count();
    assert_eq!(ups, 4, "{m}");
    let (status, body) = e.get("/engine_metrics").await;
    assert_eq!(status, 200);
    let all = series(&body);
    for a in [&a_single, &a_multi, &a_v6] {
        assert_known_values(
            &body,
            &[("engine", "sg"), ("role", "decode"), ("worker_addr", a)],
        );
    }
    // The fixture passes whole, its own worker_addr kept as exported_worker_addr.
    let text = std::fs::read_to_string(fixture()).unwrap();
    let fixture_samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let ours: Vec<&String> = all.iter().filter(|s| s.contains(&a_fix)).collect();
    assert_eq!(ours.len(), fixture_samples.len());
    for line in &fixture_samples {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = key.split_once('{').unwrap();
        let renamed = labels.replace("worker_addr=", "exported_worker_addr=");
        let want =
            format!("{name}{{engine=\"sg\",role=\"decode\",worker_addr=\"{a_fix}\",{renamed}");
        assert!(all.contains(&want), "missing {want}");
        let got = body
            .lines()
            .find(|l| l.starts_with(&format!("{want} ")))
            .unwrap();
        let got: f64 = got.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert_eq!(got, value.parse::<f64>().unwrap(), "{want}");
    }
    assert_eq!(
        sample(&m, "fpm_engine_scrape_samples", &[("worker_addr", &a_fix)]),
        Some(fixture_samples.len() as f64)
    );
    // OpenMetrics by Accept, accepted by prometheus_client's strict parser.
    let r = reqwest::Client::new()
        .get(format!("{}/engine_metrics", e.url))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = r.text().await.unwrap();
    common::openmetrics_check(&om).expect("OpenMetrics output parses");
    e.stop().await;

    // Clean input gives promtool-clean output.
    let one = format!("http://127.0.0.1:{}", single.port);
    let e = Exporter::start(&[
        "--engine",
        "sg",
        "--scrape",
        &one,
        "--scrape-interval",
        "300ms",
    ])
    .await;
    wait_for("single up", Duration::from_secs(20), || async {
        (up(&e, &a_single).await == Some(1.0)).then_some(())
    })
    .await;
    let body = e.get("/engine_metrics").await.1;
    let (clean, report) = common::promtool_check(&body);
    assert!(clean, "promtool:\n{report}\n{body}");
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_workers_are_bounded_counted_and_never_stall_the_others() {
    let good = Worker::spawn("single", &[]);
    let doomed = Worker::spawn("single", &[]);
    let slow = Worker::spawn("slow", &["--delay", "30"]);
    let huge = Worker::spawn("huge", &["--mib", "50"]);
    let garbage = Worker::spawn("garbage", &[]);
    let down = common::free_port();
    let addr = |p: u16| format!("http://127.0.0.1:{p}/metrics");
    let targets = [
        good.port,
        doomed.port,
        slow.port,
        huge.port,
        garbage.port,
        down,
    ];
    let mut argv = vec![
        "--engine",
        "w",
        "--scrape-interval",
        "500ms",
        "--scrape-timeout",
        "400ms",
        "--scrape-max-body-bytes",
        "4194304",
    ];
    let addrs: Vec<String> = targets.iter().map(|p| addr(*p)).collect();
    for a in &addrs {
        argv.extend(["--scrape", a.as_str()]);
    }
    let e = Exporter::start(&argv).await;
    let err = |m: &str, p: u16, reason: &str| {
        sample(
            m,
            "fpm_engine_scrape_errors_total",
            &[("worker_addr", &addr(p)), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    wait_for("every fault counted", Duration::from_secs(20), || async {
        let m = e.metrics().await;
        (err(&m, slow.port, "timeout") >= 1.0
            && err(&m, huge.port, "body_limit") >= 1.0
            && err(&m, garbage.port, "parse") >= 1.0
            && err(&m, down, "connect") >= 1.0
            && up(&e, &addr(good.port)).await == Some(1.0)
            && up(&e, &addr(doomed.port)).await == Some(1.0))
        .then_some(())
    })
    .await;
    let m = e.metrics().await;
    for p in [slow.port, huge.port, garbage.port, down] {
        assert_eq!(
            sample(&m, "fpm_engine_scrape_up", &[("worker_addr", &addr(p))]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &m,
                "fpm_engine_scrape_samples",
                &[("worker_addr", &addr(p))]
            ),
            Some(0.0)
        );
    }
    // The slow worker is mid-scrape most of the time: /engine_metrics answers from cache.
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = e.get("/engine_metrics").await;
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(status, 200);
        series(&body);
        assert_known_values(&body, &[("engine", "w"), ("worker_addr", &addr(good.port))]);
        for p in [slow.port, huge.port, garbage.port, down] {
            assert!(!body.contains(&addr(p)), "series of faulty worker {p}");
        }
    }
    // A worker that goes down leaves the fan-in with its first failed scrape.
    let mut doomed = doomed;
    let _ = doomed.child.kill();
    let _ = doomed.child.wait();
    let gone = addr(doomed.port);
    wait_for(
        "the stopped worker down",
        Duration::from_secs(10),
        || async { (up(&e, &gone).await == Some(0.0)).then_some(()) },
    )
    .await;
    let m = e.metrics().await;
    assert!(err(&m, doomed.port, "connect") >= 1.0);
    let body = e.get("/engine_metrics").await.1;
    assert!(!body.contains(&gone), "series of the stopped worker remain");
    assert_known_values(&body, &[("engine", "w"), ("worker_addr", &addr(good.port))]);
    e.stop().await;
}

/// `Accept-Encoding: gzip` is sent and a gzip answer decoded: prometheus_client's own
/// server compresses when asked (its `scrape_worker_gzip_requests_total` counts the
/// requests that asked). A gzip bomb is cut at the byte limit counted after
/// decompression, and counted `body_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_answers_are_decoded_and_a_bomb_is_cut_at_the_limit() {
    let http = Worker::spawn("sglang-http", &[]);
    let bomb = Worker::spawn("gzip-bomb", &["--mib", "256"]);
    let a_http = format!("http://127.0.0.1:{}/metrics", http.port);
    let a_bomb = format!("http://127.0.0.1:{}/metrics", bomb.port);
    let e = Exporter::start(&[
        "--engine",
        "z",
        "--scrape",
        &a_http,
        "--scrape",
        &a_bomb,
        "--scrape-interval",
        "300ms",
        "--scrape-timeout",
        "250ms",
        "--scrape-max-body-bytes",
        "4194304",
    ])
    .await;
    let body = wait_for(
        "the gzip worker scraped",
        Duration::from_secs(20),
        || async {
            let (_, body) = e.get("/engine_metrics").await;
            let asked = sample(
                &body,
                "scrape_worker_gzip_requests_total",
                &[("worker_addr", &a_http)],
            )?;
            (asked >= 1.0).then_some(body)
        },
    )
    .await;
    assert_eq!(
        sample(
            &body,
            "sglang:num_running_reqs",
            &[("worker_addr", &a_http), ("model_name", "bench-model")]
        ),
        Some(5.5),
        "the decoded body's values"
    );
    let m = wait_for("the bomb counted", Duration::from_secs(20), || async {
        let m = e.metrics().await;
        let n = sample(
            &m,
            "fpm_engine_scrape_errors_total",
            &[("worker_addr", &a_bomb), ("reason", "body_limit")],
        )?;
        (n >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        sample(&m, "fpm_engine_scrape_up", &[("worker_addr", &a_bomb)]),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "fpm_engine_scrape_errors_total",
            &[("worker_addr", &a_bomb), ("reason", "parse")]
        ),
        Some(0.0),
        "the bomb is inflated and cut, never parsed as compressed bytes"
    );
    e.stop().await;
}
