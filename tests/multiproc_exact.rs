//! `/engine_metrics` line for line against the real `prometheus_client` 0.26.0: files
//! written by real Python processes (tests/py/multiproc_exact.py `spec`, which can
//! give a process the pid of another, as a restarted container does), and Python's
//! own `generate_latest` (text and OpenMetrics) over a `MultiProcessCollector` of the
//! same directory as the expected output, HELP, TYPE and sample names byte for byte.

mod common;

use common::{repo_root, sample, venv_python, Exporter};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// One real writer process with multiprocess identifier `pid`, writing `ops` in order.
fn spec(dir: &Path, pid: u32, ops: Value) {
    common::require_test_deps();
    let mut child = Command::new(venv_python())
        .arg(repo_root().join("tests/py/multiproc_exact.py"))
        .args(["spec", "--dir", dir.to_str().unwrap()])
        .args(["--pid", &pid.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(ops.to_string().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python's output for `dir` against one GET of the exporter's `/engine_metrics`:
/// the JSON report; panics with the differences.
async fn exact(exp: &Exporter, dir: &Path, openmetrics: bool) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("tests/py/multiproc_exact.py"))
        .args(["exact", "--dir", dir.to_str().unwrap()])
        .args(["--url", &format!("{}/engine_metrics", exp.url)])
        .args([
            "--own",
            &format!("engine=\"e\",worker_addr=\"{}\"", dir.display()),
        ]);
    if openmetrics {
        cmd.arg("--openmetrics");
    }
    common::json_report(
        cmd,
        &format!("exporter differs from prometheus_client (openmetrics: {openmetrics})"),
    )
    .await
}

async fn both_formats_equal_python(exp: &Exporter, dir: &Path) {
    for om in [false, true] {
        let r = exact(exp, dir, om).await;
        assert!(r["checked"].as_u64().unwrap() > 0, "{r}");
    }
}

async fn exporter(dir: &Path, extra: &[&str]) -> Exporter {
    let mut args = vec!["--multiproc-dir", dir.to_str().unwrap(), "--engine", "e"];
    args.extend_from_slice(extra);
    Exporter::start(&args).await
}

fn counter(name: &str, labels: Value, value: f64) -> Value {
    json!({"kind": "counter", "name": name, "help": "Requests.", "labels": labels, "value": value})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_under_the_same_pid_and_inode_is_read_under_its_own_keys() {
    let top = tempfile::tempdir().unwrap();
    let (d, scratch) = (top.path().join("mp"), top.path().join("scratch"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    spec(
        &d,
        4242,
        json!([
            counter("c", json!({"k": "aa"}), 1.0),
            counter("c", json!({"k": "bb"}), 2.0)
        ]),
    );
    let exp = exporter(&d, &[]).await;
    both_formats_equal_python(&exp, &d).await;
    // The process restarts under the same pid and writes its series in another order;
    // its file has the same name, inode, `used` and key lengths as the old one.
    spec(
        &scratch,
        4242,
        json!([
            counter("c", json!({"k": "bb"}), 20.0),
            counter("c", json!({"k": "aa"}), 10.0)
        ]),
    );
    let file = d.join("counter_4242.db");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    std::fs::write(
        &file,
        std::fs::read(scratch.join("counter_4242.db")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap()),
        ino
    );
    for _ in 0..2 {
        let body = exp.get("/engine_metrics").await.1;
        assert_eq!(
            sample(&body, "c_total", &[("k", "aa")]),
            Some(10.0),
            "{body}"
        );
        assert_eq!(
            sample(&body, "c_total", &[("k", "bb")]),
            Some(20.0),
            "{body}"
        );
    }
    both_formats_equal_python(&exp, &d).await;
    exp.stop().await;
}

fn gauge(name: &str, mode: &str, labels: Value, value: f64) -> Value {
    json!({"kind": "gauge", "name": name, "help": "Level.", "labels": labels, "value": value, "mode": mode})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_names_and_a_user_pid_label_are_served_as_python_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (pid, v) in [(100, 1.0), (101, 2.0)] {
        spec(
            d,
            pid,
            json!([
                // Next to the UTF-8 names, a plain family of the same file: before, the
                // file was dropped whole (bad_key), this one with it.
                counter("plain", json!({}), v),
                counter("http.server.requests", json!({"http.method": "GET", "ok": "1"}), v),
                counter("9lives", json!({"1x": "y", "ünï": "z"}), v),
                {"kind": "histogram", "name": "lat.s", "help": "Latency.",
                 "labels": {"a.b": "c", "a_a": "d", "z": "e"}, "value": v / 4.0, "buckets": [0.3, 1.0]},
                gauge("g.max", "max", json!({"pid": format!("u{pid}"), "m": "x"}), v),
                gauge("g_min", "livemin", json!({"pid": "same", "m": "x"}), v),
                gauge("g_sum", "sum", json!({"pid": format!("u{pid}")}), v),
                gauge("g_recent", "mostrecent", json!({"pid": format!("u{pid}")}), v),
                // Python sorts labels by name as written, then escapes them; a gauge
                // file's pid goes in its sorted place too.
                gauge("g_all", "all", json!({"pid": "user", "m": "x", "zone": "z", "a.b": "1", "a_a": "2"}), v),
                gauge("g_all_le", "liveall", json!({"le": "0.5", "zone": "z"}), v),
            ]),
        );
    }
    let exp = exporter(d, &["--multiproc-no-pid-check"]).await;
    both_formats_equal_python(&exp, d).await;
    let body = exp.get("/engine_metrics").await.1;
    assert!(body.contains("http_server_requests_total{"), "{body}");
    assert_eq!(sample(&body, "g_sum", &[]), Some(3.0), "{body}");
    let m = exp.metrics().await;
    assert_eq!(
        sample(&m, "fpm_multiproc_errors_total", &[("reason", "bad_key")]),
        Some(0.0)
    );
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_names_samples_as_python_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    spec(
        d,
        300,
        json!([
            {"kind": "counter", "name": "sglang:num_requests", "help": "Requests \"served\"\\n.",
             "labels": {"model_name": "m"}, "value": 3.0},
            {"kind": "histogram", "name": "sglang:e2e_request_latency_seconds", "help": "Latency.",
             "labels": {"model_name": "m"}, "value": 0.2, "buckets": [0.1, 1.0]},
            gauge("sglang:num_running_reqs", "mostrecent", json!({"model_name": "m"}), 4.0),
            gauge("http.server.active", "livesum", json!({}), 2.0),
        ]),
    );
    let exp = exporter(d, &["--multiproc-no-pid-check"]).await;
    both_formats_equal_python(&exp, d).await;
    let (_, om) = get_openmetrics(&exp).await;
    // Python's samples are named with `_` for `:` in OpenMetrics; so are the exporter's,
    // under a family header of the same name, which Python's strict parser types.
    assert!(om.contains("# TYPE sglang_num_requests counter\n"), "{om}");
    assert!(om.contains("\nsglang_num_requests_total{"), "{om}");
    assert!(!om.contains("sglang:"), "{om}");
    exp.stop().await;
}

async fn get_openmetrics(exp: &Exporter) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{}/engine_metrics", exp.url))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_is_the_one_python_takes_from_the_files_read_now() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with_help = |help: &str, v: f64| json!([{"kind": "counter", "name": "c", "help": help, "labels": {}, "value": v}]);
    spec(d, 400, with_help("Old help.", 1.0));
    let exp = exporter(d, &[]).await;
    both_formats_equal_python(&exp, d).await;
    // A new version of the engine documents the family differently. While both
    // files are there, Python takes the help of the first file it lists holding the
    // family; once the old process's file is gone, only the new help is left.
    spec(d, 401, with_help("New help.", 2.0));
    both_formats_equal_python(&exp, d).await;
    std::fs::remove_file(d.join("counter_400.db")).unwrap();
    both_formats_equal_python(&exp, d).await;
    let body = exp.get("/engine_metrics").await.1;
    assert!(body.contains("# HELP c_total New help.\n"), "{body}");
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_limit_cut_never_makes_a_counter_go_down() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    spec(d, 500, json!([counter("c", json!({}), 5.0)]));
    spec(d, 501, json!([counter("c", json!({}), 7.0)]));
    // Both small files fit (each costs 4 KiB to open plus its `used` bytes).
    let exp = exporter(d, &["--multiproc-max-bytes", "65536"]).await;
    both_formats_equal_python(&exp, d).await;
    let body = exp.get("/engine_metrics").await.1;
    assert_eq!(sample(&body, "c_total", &[]), Some(12.0), "{body}");
    // Process 501 writes many more series: its file alone is now over the budget.
    let mut ops: Vec<Value> = (0..1000)
        .map(|i| counter("wide", json!({"slot": i.to_string()}), 1.0))
        .collect();
    ops.push(counter("c", json!({}), 1.0));
    spec(d, 501, Value::Array(ops));
    for _ in 0..2 {
        let body = exp.get("/engine_metrics").await.1;
        // The last complete read (12), never process 500's 5 alone.
        assert_eq!(sample(&body, "c_total", &[]), Some(12.0), "{body}");
    }
    let m = exp.metrics().await;
    assert!(
        sample(&m, "fpm_multiproc_cut_reads_total", &[]).unwrap() >= 2.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "fpm_multiproc_errors_total",
            &[("reason", "byte_limit")]
        )
        .unwrap()
            >= 2.0
    );
    exp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_named_like_the_exporters_own_are_prefixed_until_free() {
    // A process whose samples carry `engine` and `exported_engine` already: Prometheus
    // would drop the target over one label name written twice.
    let top = tempfile::tempdir().unwrap();
    let d = top.path().join("mp");
    std::fs::create_dir_all(&d).unwrap();
    spec(
        &d,
        77,
        json!([counter(
            "relabelled",
            json!({"engine": "inner", "exported_engine": "older"}),
            3.0
        )]),
    );
    let exp = exporter(&d, &[]).await;
    let body = exp.get("/engine_metrics").await.1;
    let l = [
        ("engine", "e"),
        ("exported_engine", "older"),
        ("exported_exported_engine", "inner"),
    ];
    assert_eq!(sample(&body, "relabelled_total", &l), Some(3.0), "{body}");
    let (ok, report) = common::promtool_check(&body);
    assert!(ok, "promtool: {report}\n{body}");
    exp.stop().await;
}
