//! A real `nats-server` (Debian's package) for the NATS tests: started on a free
//! loopback port with JetStream in a temp dir, restartable on the same port, killed on
//! drop.
#![allow(dead_code)]

use crate::common::{free_port, sample, wait_for, Exporter};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One nats-server process.
pub struct NatsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra command-line arguments (`--auth TOKEN`, ...).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let mut s = NatsServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        s.spawn();
        s
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/test-deps.sh installs Debian's nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends the server a signal by name (`STOP` freezes it: its sockets stay open but
    /// nothing is read, as a server that is overloaded; `CONT` thaws it).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with its JetStream state gone (a server whose
    /// volume was lost, or an in-memory one).
    pub fn restart_without_state(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = entry.unwrap().path();
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        self.spawn();
    }

    /// A plain client of the server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to nats-server")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the exporter's NATS client in `role` (`ingest` or `publish`) is connected.
pub async fn wait_connected(ex: &Exporter, role: &str) {
    wait_for(
        &format!("nats {role} connected"),
        Duration::from_secs(10),
        || async {
            (sample(&ex.metrics().await, "fpm_nats_connected", &[("role", role)]) == Some(1.0))
                .then_some(())
        },
    )
    .await;
}

/// Dynamo's envelope (stamped now) around a small FPM frame of `worker_id`/0, as a
/// publisher without an edge sends it (the crate's encoders, checked against Dynamo's
/// codec in nats_dynamo.rs).
pub fn enveloped(worker_id: &str, publisher_id: u64, sequence: u64, counter: u64) -> bytes::Bytes {
    enveloped_payload(&fpm_payload(worker_id, counter), publisher_id, sequence)
}

/// A small FPM frame of `worker_id`/0 with `counter`, encoded by the crate's encoder.
pub fn fpm_payload(worker_id: &str, counter: u64) -> Vec<u8> {
    fpm_exporter::wire::encode::encode_payload(&fpm_exporter::wire::ForwardPassMetrics {
        version: 1,
        worker_id: worker_id.into(),
        counter_id: counter,
        wall_time: fpm_exporter::wire::Real(0.01),
        ..Default::default()
    })
}

/// Dynamo's envelope (stamped now) around `payload`; a flood encodes the frame once.
pub fn enveloped_payload(payload: &[u8], publisher_id: u64, sequence: u64) -> bytes::Bytes {
    let mut buf = Vec::new();
    fpm_exporter::source::nats::envelope::encode(
        &fpm_exporter::source::nats::envelope::Envelope {
            publisher_id,
            sequence,
            published_at: crate::common::now_ms(),
            topic: "forward-pass-metrics",
            payload,
        },
        &mut buf,
    );
    buf.into()
}

/// An edge on node `n1` relaying engine `sgl` of `endpoint` to `url` without a KV
/// table, plus `extra` flags; waits until its publish connection is up.
pub async fn relay_edge(url: &str, endpoint: &str, extra: &[&str]) -> Exporter {
    let mut args = vec![
        "--endpoint",
        endpoint,
        "--engine",
        "sgl",
        "--node",
        "n1",
        "--nats-publish",
        url,
        "--nats-kv-bucket",
        "",
    ];
    args.extend_from_slice(extra);
    let edge = Exporter::start(&args).await;
    wait_connected(&edge, "publish").await;
    edge
}

/// An edge exporter process, killed on drop.
pub struct Edge {
    /// The process.
    pub child: Child,
    /// Its base URL.
    pub url: String,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busy frame (wire field names) with `running` decode requests.
pub fn busy(running: u64) -> Value {
    json!({
        "scheduled_requests": {"num_prefill_requests": 0, "sum_prefill_tokens": 0,
            "var_prefill_length": 0.0, "sum_prefill_kv_tokens": 0,
            "num_decode_requests": running, "sum_decode_kv_tokens": 100 * running,
            "var_decode_kv_tokens": 0.0},
        "queued_requests": {"num_prefill_requests": 0, "sum_prefill_tokens": 0,
            "var_prefill_length": 0.0, "num_decode_requests": 0,
            "sum_decode_kv_tokens": 0, "var_decode_kv_tokens": 0.0},
        "wall_time": 0.01
    })
}

/// An exporter process whose log (stderr, at the default log level) goes to a file.
pub struct Logged {
    /// The process and its URL.
    pub edge: Edge,
    /// Its stderr.
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Logged {
    /// A central exporter ingesting from `nats`, once its ingest connection is up.
    pub async fn central(nats: &NatsServer) -> Logged {
        let central = Logged::spawn(&["--nats", &nats.url()]);
        central
            .wait_sample("fpm_nats_connected", &[("role", "ingest")], 1.0)
            .await;
        central
    }

    /// Starts `fpm-exporter ARGS` on a free port, `RUST_LOG` unset.
    pub fn spawn(args: &[&str]) -> Logged {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let port = crate::common::free_port_range(1);
        let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn fpm-exporter");
        Logged {
            edge: Edge {
                child,
                url: format!("http://127.0.0.1:{port}"),
            },
            log,
            _dir: dir,
        }
    }

    /// Its /metrics body (empty while it is not up).
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.edge.url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until `name{labels}` is at least `min`; returns it.
    pub async fn wait_sample(&self, name: &str, labels: &[(&str, &str)], min: f64) -> f64 {
        wait_for(
            &format!("{name}{labels:?} >= {min}"),
            Duration::from_secs(15),
            || async { sample(&self.metrics().await, name, labels).filter(|v| *v >= min) },
        )
        .await
    }

    /// The lines logged so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
