//! The real binary as an operator runs it: CPU with many absent publishers, readiness,
//! a publisher appearing late, and SIGTERM while responses and a stream are in flight.
//! A separate process, so CPU and exit status are the exporter's alone.

mod common;

use common::{sample, wait_for};
use fpm_exporter::publisher::FramePublisher;
use fpm_exporter::wire::ForwardPassMetrics;
use futures::StreamExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc {
    child: Child,
    url: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts the binary on a free port and waits until /healthz answers.
    async fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_env(args, &[]).await
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    async fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let port = common::free_port_range(1);
        let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn fpm-exporter");
        let url = format!("http://127.0.0.1:{port}");
        let p = Proc {
            child,
            url,
            stderr,
            _dir: dir,
        };
        wait_for("exporter answering", Duration::from_secs(10), || async {
            reqwest::get(format!("{}/healthz", p.url))
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
        p
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// User plus system CPU seconds of the process so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `limit` for the exit; returns the status and how long it took.
    fn wait_exit(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some((s, t0.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The stop finished its work inside the shutdown grace and nothing panicked.
    fn assert_clean_stop(&self) {
        let log = self.stderr();
        assert!(
            !log.contains("grace period elapsed"),
            "shutdown waited out its grace period:\n{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// How long a test waits for the exit after SIGTERM. The exporter's own bound is its
/// 0.9 s shutdown grace, and a clean stop (the grace not elapsed) is asserted; the wall
/// time from `kill` to the reaped exit also holds process scheduling, which on a
/// loaded 2-core machine can add seconds.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_publishers_cost_no_cpu_keep_readiness_and_a_late_one_is_picked_up() {
    let base = common::free_port_range(32);
    let ipc = common::ipc_dir();
    let cfg = ipc.path().join("engines.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[engine]]\nname = \"tcp\"\nendpoint = \"tcp://127.0.0.1:{base}\"\nranks = 32\n\
             [[engine]]\nname = \"ipc\"\nendpoint = \"ipc://{}/absent\"\nranks = 32\n",
            ipc.path().display()
        ),
    )
    .unwrap();
    let mut p = Proc::spawn(&["--config", cfg.to_str().unwrap()]).await;
    let (status, body) = p.get("/readyz").await;
    assert_eq!(status, 200, "ready although no publisher is up: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["endpoints"], 64);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (p.cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let share = (p.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    eprintln!(
        "CPU with 64 absent publishers: {:.2}% of one core",
        share * 100.0
    );
    assert!(
        share < 0.05,
        "{:.1}% of a core with 64 absent publishers",
        share * 100.0
    );
    let m = p.get("/metrics").await.1;
    let connected: Vec<f64> = m
        .lines()
        .filter(|l| l.starts_with("fpm_endpoint_connected{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(connected, vec![0.0; 64]);
    assert_eq!(p.get("/readyz").await.0, 200);

    // Rank 7's publisher appears 6 s after the exporter started.
    let mut publisher = FramePublisher::bind(&format!("tcp://127.0.0.1:{}", base + 7))
        .await
        .unwrap();
    let appeared = Instant::now();
    let l = [("engine", "tcp"), ("dp_rank", "7")];
    loop {
        let mut hb = ForwardPassMetrics {
            version: 1,
            dp_rank: 7,
            worker_id: "late".into(),
            ..Default::default()
        };
        publisher.send(&mut hb).await.unwrap();
        if sample(&p.get("/metrics").await.1, "fpm_up", &l) == Some(1.0) {
            break;
        }
        // Promise: the next connect attempt within 500 ms (the longest pause between
        // attempts) plus the handshake; the bound leaves room for a loaded machine.
        assert!(
            appeared.elapsed() < Duration::from_secs(10),
            "late publisher not picked up in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("late publisher picked up after {:?}", appeared.elapsed());
    p.sigterm();
    let (status, took) = p.wait_exit(EXIT_LIMIT).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    p.assert_clean_stop();
    eprintln!("exit after SIGTERM took {took:?}");
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_in_flight_responses_and_exits_0_within_the_grace() {
    let mut p = Proc::spawn(&["--demo", "--demo-ranks", "4"]).await;
    wait_for("demo ranks up", Duration::from_secs(15), || async {
        (sample(&p.get("/metrics").await.1, "fpm_up", &[("dp_rank", "3")]) == Some(1.0))
            .then_some(())
    })
    .await;
    let stream = reqwest::get(format!("{}/v1/stream", p.url)).await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(first.unwrap().is_ok());

    // 6 clients scrape /metrics back to back; every response that began must complete.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let scrapers: Vec<_> = (0..6)
        .map(|_| {
            let (url, stop, done) = (p.url.clone(), stop.clone(), completed.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut complete, mut broken) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(r) = client.get(format!("{url}/metrics")).send().await else {
                        // Refused or closed before a response: not in flight.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    match r.text().await {
                        Ok(body) if body.contains("\nprocess_start_time_seconds ") => {
                            complete += 1;
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(body) => broken.push(format!("truncated body of {} bytes", body.len())),
                        Err(e) => broken.push(format!("body error: {e}")),
                    }
                }
                (complete, broken)
            })
        })
        .collect();
    // Under load means under load: wait until the scrapers have completed some.
    wait_for("scrapes under way", Duration::from_secs(30), || async {
        (completed.load(std::sync::atomic::Ordering::Relaxed) >= 10).then_some(())
    })
    .await;
    p.sigterm();
    let exited = tokio::task::block_in_place(|| p.wait_exit(EXIT_LIMIT));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, took) = exited.expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status}");

    // The stream ends cleanly (end of body, not a broken connection).
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(chunk) = stream.next().await {
            if let Err(e) = chunk {
                return Err(e.to_string());
            }
        }
        Ok(())
    })
    .await
    .expect("stream ended");
    assert_eq!(rest, Ok(()), "stream ended with an error");
    let mut complete = 0;
    for s in scrapers {
        let (c, broken) = s.await.unwrap();
        assert!(broken.is_empty(), "in-flight responses broken: {broken:?}");
        complete += c;
    }
    assert!(complete > 10, "only {complete} scrapes completed");
    p.assert_clean_stop();
    eprintln!("exit after SIGTERM took {took:?}; {complete} scrapes completed under load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_from_the_environment_guards_the_json_api_only() {
    let p = Proc::spawn_env(
        &["--demo", "--demo-ranks", "1"],
        &[("FPM_API_TOKEN", "env-token-123")],
    )
    .await;
    let client = reqwest::Client::new();
    let ranks = format!("{}/v1/ranks", p.url);
    assert_eq!(client.get(&ranks).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&ranks)
            .bearer_auth("env-token-12")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(&ranks)
            .bearer_auth("env-token-123")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(p.get("/metrics").await.0, 200);
    // The token never shows up in the logs.
    assert!(!p.stderr().contains("env-token-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curve_and_plain_publishers_are_counted_failed_handshakes_with_one_warning_each() {
    // libzmq never names its mechanism to a NULL peer: a CURVE PUB sends its 10-byte
    // signature and closes, a PLAIN one closes without a byte.
    let base = common::free_port_range(2);
    let mut d = common::Driver::spawn();
    let curve = serde_json::json!({"CURVE_SERVER": 1,
        "CURVE_SECRETKEY": "}=9:hC?V)]ub7TG>J%lRrvFsW<R-s6nz^$.<pm9}"});
    d.start_with(0, &format!("tcp://127.0.0.1:{base}"), "w-curve", curve);
    let plain = serde_json::json!({"PLAIN_SERVER": 1});
    d.start_with(
        1,
        &format!("tcp://127.0.0.1:{}", base + 1),
        "w-plain",
        plain,
    );
    let p = Proc::spawn(&[
        "--endpoint",
        &format!("tcp://127.0.0.1:{base}"),
        "--ranks",
        "2",
        "--engine",
        "secured",
    ])
    .await;
    let failures = |m: &str, rank: &str| {
        sample(
            m,
            "fpm_endpoint_handshake_failures_total",
            &[("dp_rank", rank), ("reason", "security")],
        )
        .unwrap_or(0.0)
    };
    let m = wait_for(
        "failed handshakes counted",
        Duration::from_secs(10),
        || async {
            let m = p.get("/metrics").await.1;
            (failures(&m, "0") >= 3.0 && failures(&m, "1") >= 3.0).then_some(m)
        },
    )
    .await;
    for rank in ["0", "1"] {
        let l = [("dp_rank", rank)];
        assert_eq!(sample(&m, "fpm_endpoint_connected", &l), Some(0.0));
        assert_eq!(sample(&m, "fpm_endpoint_connects_total", &l), Some(0.0));
        assert!(sample(&m, "fpm_endpoint_receive_errors_total", &l) >= Some(3.0));
        for other in ["denied", "protocol"] {
            let l = [("dp_rank", rank), ("reason", other)];
            assert_eq!(
                sample(&m, "fpm_endpoint_handshake_failures_total", &l),
                Some(0.0)
            );
        }
    }
    // Told once per endpoint (then at most once per 10 s), at WARN, with what to do.
    let log = std::fs::read_to_string(&p.stderr).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("CURVE or PLAIN"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    for port in [base, base + 1] {
        assert!(
            warnings.iter().any(|w| w.contains(&format!(":{port}"))),
            "{warnings:?}"
        );
    }
    drop(d);
}
