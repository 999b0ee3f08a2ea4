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
