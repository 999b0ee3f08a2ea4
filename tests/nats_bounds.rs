//! What a hostile or mistaken NATS side cannot do to the process: 100,000 spellings of one
//! subject through a real nats-server leave its memory bounded, and empty Dynamo names
//! (which would match or reach nothing) stop it at start with a clear message.

mod common;
mod nats_support;

use common::wait_for;
use nats_support::{Logged, NatsServer};
use std::process::Command;
use std::time::Duration;

/// Resident memory of a process, in MB (Linux).
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// The `n`th spelling of the namespace `abcdefghijklmnopq`: letter `j` is %-escaped when
/// bit `j` of `n` is set (2^17 spellings, all decoding to the same scope).
fn spelling(n: u32) -> String {
    let mut s = String::from("namespace.");
    for (j, c) in "abcdefghijklmnopq".chars().enumerate() {
        if n >> j & 1 == 1 {
            s.push_str(&format!("%{:02X}", c as u32));
        } else {
            s.push(c);
        }
    }
    s + ".component.backend.endpoint.generate.forward-pass-metrics"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_spellings_of_one_subject_keep_memory_bounded() {
    const SPELLINGS: u32 = 100_000;
    let nats = NatsServer::start();
    let central = Logged::central(&nats).await;
    let c = nats.client().await;
    let received = |n: u32| {
        let central = &central;
        async move {
            wait_for("messages in", Duration::from_secs(20), || async {
                common::sample(&central.metrics().await, "fpm_nats_messages_total", &[])
                    .filter(|m| *m >= f64::from(n))
                    .map(|_| ())
            })
            .await
        }
    };
    // Paced in steps of 5,000 so the subscription's queue never holds many: what grows
    // is what ingest keeps, not messages in flight.
    let mut sent = 0;
    let mut step = |to: u32| {
        let c = c.clone();
        let from = sent;
        sent = to;
        async move {
            for n in from..to {
                c.publish(spelling(n), "x".into()).await.unwrap();
            }
            c.flush().await.unwrap();
        }
    };
    step(5_000).await;
    received(5_000).await;
    let pid = central.edge.child.id();
    let start = rss_mb(pid);
    let mut to = 5_000;
    while to < SPELLINGS {
        to += 5_000;
        step(to).await;
        received(to).await;
    }
    let end = rss_mb(pid);
    let m = central.metrics().await;
    assert_eq!(
        common::sample(
            &m,
            "fpm_nats_rejected_messages_total",
            &[("reason", "envelope_malformed")]
        ),
        Some(f64::from(SPELLINGS)),
        "each spelling reached ingest"
    );
    eprintln!("RSS {start:.1} MB -> {end:.1} MB after {SPELLINGS} spellings");
    assert!(
        end - start < 8.0,
        "RSS grew from {start:.1} to {end:.1} MB over {SPELLINGS} spellings of one subject"
    );
}

/// Runs the exporter with `args` and returns its exit code and stderr.
fn run(args: &[&str], cwd: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn empty_dynamo_names_stop_the_process_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run(
        &["--nats", "nats://127.0.0.1:4222", "--nats-namespace", ""],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("namespace") && err.contains("empty"), "{err}");

    let config = dir.path().join("engines.toml");
    std::fs::write(
        &config,
        "[nats]\npublish_url = \"nats://127.0.0.1:4222\"\n\n\
         [[engine]]\nname = \"sgl\"\nendpoint = \"tcp://127.0.0.1:5557\"\n\
         nats = { component = \"\" }\n",
    )
    .unwrap();
    let (code, err) = run(
        &["--config", config.to_str().unwrap(), "--node", "n1"],
        dir.path(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("engine 1") && err.contains("component") && err.contains("empty"),
        "{err}"
    );
}
