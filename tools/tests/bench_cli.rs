//! The benchmark binary's command line: sections are validated before anything runs
//! (the benchmark itself never runs in the test suite).

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fpm-bench"))
        .args(args)
        .output()
        .expect("run fpm-bench")
}

#[test]
fn lists_the_chosen_sections_and_refuses_unknown_ones() {
    let all = bench(&["--list"]);
    assert!(all.status.success());
    let listed = String::from_utf8_lossy(&all.stdout);
    for s in [
        "idle",
        "transport",
        "ingest",
        "python",
        "latency",
        "scrape",
        "heap",
        "zero-loss",
        "soak",
    ] {
        assert!(
            listed.lines().any(|l| l == s),
            "{s} missing from {listed:?}"
        );
    }
    let some = bench(&["--only", "heap, ingest", "--list"]);
    assert_eq!(String::from_utf8_lossy(&some.stdout), "heap\ningest\n");
    let bad = bench(&["--only", "ingest,nosuch", "--list"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown section \"nosuch\""));
}

/// The standalone generator publishes at the requested rate for the requested time
/// and reports what it sent, one entry per rank.
#[test]
fn loadgen_reports_what_it_sent() {
    let dir = tempfile::Builder::new().prefix("fpm-lg").tempdir().unwrap();
    let endpoint = format!("ipc://{}/lg", dir.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_fpm-loadgen"))
        .args(["--endpoint", &endpoint, "--ranks", "2", "--rate", "2000"])
        .args([
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--hold",
            "100ms",
        ])
        .output()
        .expect("run fpm-loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    let sent = v["sent"].as_u64().unwrap();
    assert!(
        (800..=1100).contains(&sent),
        "2000 frames/s for 0.5 s sent {sent}"
    );
    let ranks = v["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    assert_eq!(ranks[1]["address"], format!("{endpoint}.1"));
    assert!(
        ranks[0]["warmup_sent"].as_u64().unwrap() >= 1,
        "heartbeats during warm-up"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_fpm-loadgen"))
        .args(["--ranks", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
