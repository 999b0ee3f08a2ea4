//! Shared helpers of the integration tests: the real-publisher driver, an in-process
//! exporter, and bounded waiting. Everything here is bounded in time.
#![allow(dead_code)]

pub mod prometheus;
pub mod scrape_worker;
pub mod snapshots;

use clap::Parser;
use fpm_exporter::app::Running;
use fpm_exporter::config::{Cli, Settings};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv python that has msgspec and pyzmq (made by scripts/test-deps.sh).
pub fn venv_python() -> PathBuf {
    repo_root().join("target/pyenv/bin/python")
}

/// Fails the test with a clear message when the Python side was not installed.
pub fn require_test_deps() {
    let module = repo_root().join("target/fpm-publisher/forward_pass_metrics.py");
    assert!(
        venv_python().exists() && module.exists(),
        "run scripts/test-deps.sh first (the README's test command does it)"
    );
}

/// A running `tests/py/publisher_driver.py`: real SGLang `_FpmPublisherThread`s.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    /// Starts the driver and waits for `{"ready":true}`.
    pub fn spawn() -> Driver {
        require_test_deps();
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/py/publisher_driver.py"))
            .args(["--max-seconds", "600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn publisher driver");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("driver ready line");
        assert!(line.contains("ready"), "driver said {line:?}");
        Driver {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its reply; panics on `ok: false`.
    pub fn cmd(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("driver reply");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"));
        assert_eq!(v["ok"], json!(true), "driver refused {command}: {v}");
        v
    }

    /// The FPM payload bytes the real publisher's encoder makes of `metrics`.
    pub fn encode(&mut self, metrics: Value) -> bytes::Bytes {
        let hex = self.cmd(json!({"cmd": "encode", "metrics": metrics}))["hex"]
            .as_str()
            .unwrap()
            .to_string();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    /// Starts a real publisher for `rank` on `endpoint` (idle, so it heartbeats).
    pub fn start(&mut self, rank: u64, endpoint: &str, worker_id: &str) {
        self.cmd(json!({"cmd": "start", "rank": rank, "endpoint": endpoint, "worker_id": worker_id, "idle": true}));
    }

    /// Publishes `metrics` (wire field names) `count` times and waits until sent.
    pub fn publish(&mut self, rank: u64, metrics: Value, count: u64) {
        self.cmd(
            json!({"cmd": "publish", "rank": rank, "metrics": metrics, "count": count,
                        "backpressure": true, "drain": true}),
        );
    }

    /// Sets a publisher idle (heartbeats) or busy (no heartbeats).
    pub fn set_idle(&mut self, rank: u64, idle: bool) {
        self.cmd(json!({"cmd": "set_idle", "rank": rank, "idle": idle}));
    }

    /// Shuts one publisher down: its rank goes silent.
    pub fn stop(&mut self, rank: u64) {
        self.cmd(json!({"cmd": "stop", "rank": rank}));
    }

    /// Restarts one publisher: its sequence starts again at 0.
    pub fn restart(&mut self, rank: u64) {
        self.cmd(json!({"cmd": "restart", "rank": rank}));
    }

    /// Starts a real publisher whose PUB socket gets libzmq options first, as a
    /// deployment sets them (`{"HEARTBEAT_IVL": 100, "SNDHWM": 100}`).
    pub fn start_with(&mut self, rank: u64, endpoint: &str, worker_id: &str, sockopts: Value) {
        self.cmd(json!({"cmd": "start", "rank": rank, "endpoint": endpoint,
                        "worker_id": worker_id, "idle": true, "sockopts": sockopts}));
    }

    /// Publishes `count` copies of `metrics` paced at `rate` frames/s (the reply
    /// comes when the last was handed to the publisher).
    pub fn publish_at(&mut self, rank: u64, metrics: Value, count: u64, rate: f64) {
        self.cmd(json!({"cmd": "publish", "rank": rank, "metrics": metrics,
                        "count": count, "rate": rate, "drain": true}));
    }

    /// The next sequence number publisher `rank` will stamp.
    pub fn next_seq(&mut self, rank: u64) -> u64 {
        let v = self.cmd(json!({"cmd": "status", "rank": rank}));
        v["publishers"][rank.to_string()]["next_seq"]
            .as_u64()
            .expect("next_seq")
    }

    /// The driver's process id (to freeze its publishers with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{{\"cmd\":\"quit\"}}");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// A free tcp port on loopback, chosen by the kernel.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Free tcp ports `base..base+n` on loopback (probed by binding them).
pub fn free_port_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand::random::<u16>() % 30000);
        let ok = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free port range of {n}");
}

/// A fresh directory for ipc sockets (removed on drop).
pub fn ipc_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fpm-ipc")
        .tempdir()
        .unwrap()
}

/// An exporter running in-process on an ephemeral port.
pub struct Exporter {
    /// The running service.
    pub running: Option<Running>,
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    client: reqwest::Client,
}

impl Exporter {
    /// Starts the exporter with command-line `args` (listen is forced to 127.0.0.1:0).
    pub async fn start(args: &[&str]) -> Exporter {
        let mut argv = vec!["fpm-exporter", "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let cli = Cli::parse_from(argv);
        let settings = Settings::from_cli(&cli.run).expect("valid test settings");
        let running = fpm_exporter::app::start(settings)
            .await
            .expect("exporter starts");
        let url = format!("http://{}", running.addr);
        Exporter {
            running: Some(running),
            url,
            client: reqwest::Client::new(),
        }
    }

    /// GET a path, returning status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// The classic-text /metrics body.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.1
    }

    /// `/v1/ranks` parsed.
    pub async fn ranks(&self, query: &str) -> Value {
        serde_json::from_str(&self.get(&format!("/v1/ranks{query}")).await.1).unwrap()
    }

    /// Stops the exporter.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop(Duration::from_secs(1)).await;
        }
    }
}

/// The wall clock in Unix milliseconds (an envelope's `published_at`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls `check` every 50 ms until it returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name{labels...}` in a text exposition, matching every
/// given `label="value"` pair.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(exposition, name, labels).next()
}

/// The sum of every sample `name{labels...}` matching the given pairs (every reason of
/// a counter, say); 0 when there is none.
pub fn sample_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(exposition, name, labels).sum()
}

/// The values of every sample `name{labels...}` matching the given pairs.
fn samples<'a>(
    exposition: &'a str,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    exposition.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let (lbl, value) = rest.rsplit_once(' ')?;
        labels
            .iter()
            .all(|(k, v)| lbl.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// Runs a checking script off the runtime's workers and returns the JSON report it
/// prints; fails the test with `what`, its report and its stderr when it exits non-zero.
pub async fn json_report(mut cmd: Command, what: &str) -> Value {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap()
}

/// Runs `promtool check metrics` on an exposition: (clean, promtool's report).
pub fn promtool_check(body: &str) -> (bool, String) {
    let (status, text) = promtool_status(body);
    (status == 0 && text.trim().is_empty(), text)
}

/// Runs `promtool check metrics` on an exposition: (its exit code, its report). 1 is
/// a parse error; 3 only lint problems.
pub fn promtool_status(body: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH (scripts/test-deps.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs prometheus_client's strict OpenMetrics parser (`tests/py/check_openmetrics.py`)
/// on an exposition: `Err(the parser's message)` when it is rejected.
pub fn openmetrics_check(body: &str) -> Result<(), String> {
    require_test_deps();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.om");
    std::fs::write(&path, body).unwrap();
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/py/check_openmetrics.py"))
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// GET `/metrics` with OpenMetrics asked for; panics unless it is answered in kind.
pub async fn openmetrics_body(url: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text().await.unwrap()
}

/// Validates JSON documents against `proto/schema/` (`name` as in
/// tests/py/validate_json.py, e.g. `ranks` or `stream:frame`); panics with the error.
pub fn validate_json<S: AsRef<str>>(schema: &str, docs: &[S]) {
    require_test_deps();
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.path().join(format!("{i}.json"));
            std::fs::write(&p, d.as_ref()).unwrap();
            p
        })
        .collect();
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/py/validate_json.py"))
        .arg(schema)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{schema}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Golden payloads the released publishers emit (captured v1 frames, and vLLM's
/// timing_scope variant). The other golden files are forms only a decoder must accept
/// (positional, legacy, unknown fields, missing fields), which no publisher encodes.
pub const PUBLISHED_FORMS: [&str; 8] = [
    "v1_heartbeat",
    "v1_prefill",
    "v1_decode",
    "v1_mixed",
    "v1_large",
    "v1_worker_id_unicode",
    "v1_empty_worker",
    "vllm_timing_scope",
];

/// The raw payload of golden frame `name` (`proto/golden/<name>.msgpack`).
pub fn golden_payload(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("proto/golden")
        .join(format!("{name}.msgpack"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
