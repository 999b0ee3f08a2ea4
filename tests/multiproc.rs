//! `/engine_metrics` against the real `prometheus_client` 0.26.0: real Python processes
//! write a multiprocess directory (one exits before the scrape, one keeps writing
//! during it), and the exporter's output must equal `generate_latest` of
//! `MultiProcessCollector` on the same directory, sample for sample
//! (tests/py/multiproc.py compares them), pass promtool, and survive hostile files.

mod common;

use common::{repo_root, sample, venv_python, wait_for, Exporter};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real Python writer; dropping it closes its stdin, which ends it.
struct Writer {
    child: Child,
    pid: String,
}

impl Writer {
    fn spawn(dir: &Path, role: &str, families: &str, seed: u32) -> Writer {
        common::require_test_deps();
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/py/multiproc.py"))
            .args(["write", "--dir", dir.to_str().unwrap(), "--role", role])
            .args(["--families", families, "--seed", &seed.to_string()])
            .args(["--max-seconds", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn writer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("writer said {line:?}"))
            .trim()
            .to_owned();
        if role == "exit" {
            assert!(child.wait().unwrap().success());
        }
        Writer { child, pid }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// promtool parses the exposition; its only findings (exit 3) are lints about names
/// the engine chose (SGLang's `sglang:` prefix and units), never a format error.
fn promtool_accepts(body: &str) {
    let (ok, report) = common::promtool_check(body);
    if ok {
        return;
    }
    assert!(!report.contains("error"), "promtool:\n{report}");
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("sglang:"),
            "promtool lint on a name we wrote: {line}"
        );
    }
}

/// Runs the reference comparison against `url`; returns its JSON report.
async fn compare(dir: &Path, url: &str, dead: &str, openmetrics: bool) -> serde_json::Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("tests/py/multiproc.py"))
        .args(["compare", "--dir", dir.to_str().unwrap(), "--url", url])
        .args(["--strip", "engine,model,worker_addr", "--dead", dead]);
    if openmetrics {
        cmd.arg("--openmetrics");
    }
    common::json_report(cmd, "exporter differs from prometheus_client").await
}

async fn equivalence(families: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dead = Writer::spawn(d, "exit", families, 1);
    let _stay = Writer::spawn(d, "stay", families, 2);
    let _stay2 = Writer::spawn(d, "stay", families, 4);
    let _busy = Writer::spawn(d, "writer", families, 3);
    let exp = Exporter::start(&[
        "--multiproc-dir",
        d.to_str().unwrap(),
        "--engine",
        "e1",
        "--label",
        "model=exporter-label",
    ])
    .await;
    let url = format!("{}/engine_metrics", exp.url);
    for om in [false, true] {
        let report = compare(d, &url, &dead.pid, om).await;
        assert!(report["checked"].as_u64().unwrap() > 500, "{report}");
        // The dead process's live gauges are in Python's raw output, not in ours.
        if families == "mixed" {
            assert!(report["dead_pid_samples_in_raw_python"].as_u64().unwrap() > 0);
        }
    }
    let (status, body) = exp.get("/engine_metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("engine=\"e1\",model=\"exporter-label\""),
        "engine labels first"
    );
    promtool_accepts(&body);
    // The reader's own counters are on /metrics: every file merged, nothing skipped.
    let m = exp.metrics().await;
    assert!(sample(&m, "fpm_multiproc_files", &[("engine", "e1")]).unwrap() >= 8.0);
    for line in m
        .lines()
        .filter(|l| l.starts_with("fpm_multiproc_errors_total"))
    {
        assert!(line.ends_with(" 0"), "unexpected error: {line}");
    }
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_metrics_equal_python_collector_for_every_kind_and_mode() {
    equivalence("mixed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_metrics_equal_python_collector_for_sglang_definitions() {
    equivalence("sglang").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_into_metrics_with_the_exporter_families_first() {
    let dir = tempfile::tempdir().unwrap();
    let _w = Writer::spawn(dir.path(), "exit", "mixed", 7);
    let exp = Exporter::start(&[
        "--demo",
        "--demo-ranks",
        "1",
        "--multiproc-dir",
        dir.path().to_str().unwrap(),
        "--merge-engine-metrics",
    ])
    .await;
    let m = exp.metrics().await;
    assert!(m.contains("# TYPE fpm_frames_total counter"));
    assert!(m.contains("# TYPE mp_requests_total counter"));
    assert!(sample(&m, "mp_plain_total", &[("engine", "default")]) == Some(7.0));
    promtool_accepts(&m);
    exp.stop().await;
}

/// One entry as `mmap_dict.py` writes it.
fn entry(key: &[u8], value: f64, ts: f64) -> Vec<u8> {
    let mut e = (key.len() as i32).to_ne_bytes().to_vec();
    e.extend_from_slice(key);
    e.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
    e.extend_from_slice(&value.to_ne_bytes());
    e.extend_from_slice(&ts.to_ne_bytes());
    e
}

/// A file with `used` as given (None: the true length) and `extra` bytes after it.
fn db_file(path: &Path, entries: &[Vec<u8>], used: Option<i32>, extra: &[u8]) {
    let body: Vec<u8> = entries.concat();
    let mut f = (used.unwrap_or(8 + body.len() as i32))
        .to_ne_bytes()
        .to_vec();
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&body);
    f.extend_from_slice(extra);
    std::fs::File::create(path).unwrap().write_all(&f).unwrap();
}

fn errors(m: &str, reason: &str) -> f64 {
    sample(m, "fpm_multiproc_errors_total", &[("reason", reason)]).unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_skipped_counted_and_never_stall() {
    let top = tempfile::tempdir().unwrap();
    let d = top.path().join("mp");
    let exp = Exporter::start(&["--multiproc-dir", d.to_str().unwrap(), "--engine", "h"]).await;
    // The directory does not exist yet: an empty answer, counted.
    let (status, body) = exp.get("/engine_metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(errors(&exp.metrics().await, "no_directory") >= 1.0);

    std::fs::create_dir(&d).unwrap();
    let _w = Writer::spawn(&d, "exit", "mixed", 3);
    let clean = exp.get("/engine_metrics").await.1;
    assert!(
        clean.contains(&format!(
            "mp_plain_total{{engine=\"h\",worker_addr=\"{}\"}} 3\n",
            d.display()
        )),
        "{clean}"
    );

    let good = br#"["hx", "hx_total", {"a": "b"}, "help"]"#;
    // Writer died mid-entry: bytes past `used` are not data.
    let partial = entry(good, 5.0, 0.0);
    db_file(
        &d.join("counter_900001.db"),
        &[entry(good, 2.0, 0.0)],
        None,
        &partial[..11],
    );
    // Truncated: `used` beyond the end of the file.
    db_file(
        &d.join("counter_900002.db"),
        &[entry(good, 1.0, 0.0)],
        Some(4096),
        &[],
    );
    // `used` ends mid-entry.
    db_file(
        &d.join("counter_900003.db"),
        &[entry(good, 1.0, 0.0)],
        Some(20),
        &[],
    );
    // Keys that are not JSON, a lone surrogate, a reserved label name (`__`), which Python's writer refuses.
    db_file(
        &d.join("counter_900004.db"),
        &[entry(b"{not json", 1.0, 0.0)],
        None,
        &[],
    );
    db_file(
        &d.join("counter_900005.db"),
        &[entry(
            br#"["s", "s_total", {"a": "\ud800"}, "h"]"#,
            1.0,
            0.0,
        )],
        None,
        &[],
    );
    db_file(
        &d.join("counter_900006.db"),
        &[entry(br#"["m", "m_total", {"__x": "1"}, "h"]"#, 1.0, 0.0)],
        None,
        &[],
    );
    // Negative header, garbage, a name no prometheus_client kind has.
    db_file(&d.join("histogram_900007.db"), &[], Some(-5), &[]);
    std::fs::write(d.join("summary_900008.db"), [0xffu8; 300]).unwrap();
    db_file(
        &d.join("weird_900009.db"),
        &[entry(good, 1.0, 0.0)],
        None,
        &[],
    );
    db_file(
        &d.join("gauge_bogus_900010.db"),
        &[entry(good, 1.0, 0.0)],
        None,
        &[],
    );
    // Files Python's glob never reads.
    db_file(
        &d.join(".hidden_1.db"),
        &[entry(b"junk", 1.0, 0.0)],
        None,
        &[],
    );
    std::fs::write(d.join("notes.txt"), "x").unwrap();
    // A FIFO named like a file: opening it must not block the scrape.
    assert!(Command::new("mkfifo")
        .arg(d.join("gauge_all_900011.db"))
        .status()
        .unwrap()
        .success());

    let body = exp.get("/engine_metrics").await.1;
    let hx = format!(
        "# HELP hx_total help\n# TYPE hx_total counter\nhx_total{{engine=\"h\",worker_addr=\"{}\",a=\"b\"}} 2\n",
        d.display()
    );
    assert!(
        body.contains(&hx),
        "the file whose writer died mid-entry is read up to `used`"
    );
    assert_eq!(body.replace(&hx, ""), clean, "good files served unchanged");
    let m = exp.metrics().await;
    for (reason, n) in [
        ("truncated", 1.0),
        ("corrupt", 1.0),
        ("bad_key", 3.0),
        ("bad_header", 1.0),
        ("bad_name", 3.0),
    ] {
        assert!(errors(&m, reason) >= n, "{reason}: {}", errors(&m, reason));
    }
    let garbage = errors(&m, "truncated") + errors(&m, "corrupt") + errors(&m, "bad_header");
    assert!(
        garbage >= 4.0,
        "the garbage file is counted under one of the reasons"
    );

    // The directory disappears: empty again, counted, no crash.
    std::fs::remove_dir_all(&d).unwrap();
    let before = errors(&m, "no_directory");
    assert_eq!(exp.get("/engine_metrics").await.1, "");
    assert!(errors(&exp.metrics().await, "no_directory") > before);
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_budget_caps_what_one_scrape_reads() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Writer::spawn(dir.path(), "exit", "sglang", 1);
    let exp = Exporter::start(&[
        "--multiproc-dir",
        dir.path().to_str().unwrap(),
        "--multiproc-max-bytes",
        "65536",
    ])
    .await;
    let body = exp.get("/engine_metrics").await.1;
    let m = wait_for("byte_limit counted", Duration::from_secs(5), || async {
        let m = exp.metrics().await;
        (errors(&m, "byte_limit") >= 1.0).then_some(m)
    })
    .await;
    let files = sample(&m, "fpm_multiproc_files", &[]).unwrap();
    let all = std::fs::read_dir(dir.path()).unwrap().count() as f64;
    assert!(files < all, "{files} of {all} files read within 64 KiB");
    assert!(body.len() < 1 << 20);
    exp.stop().await;
}
