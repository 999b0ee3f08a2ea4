//! What the live-view tests share: the exporter binary as a person starts it (on a
//! port that survives a restart), the tools they drive (Debian's chromium and tmux,
//! installed by scripts/test-deps.sh; a missing one fails the test, never skips it),
//! and where their pictures go.
#![allow(dead_code)]

pub mod cdp;
pub mod tmux;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test loudly when `tool` is not installed.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not on PATH: run scripts/test-deps.sh (it installs Debian's {tool}); \
         this test drives the real {tool} and never skips"
    );
}

/// `target/test-artifacts/`, where the screenshots and captures are kept.
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub use crate::common::free_port;

/// GET `url`: (status, body), or None when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
}

/// The `fpm-exporter` binary running on a port of its own.
pub struct Exporter {
    child: Option<Child>,
    /// Its port (kept across [`Exporter::restart`]).
    pub port: u16,
    /// Its base URL.
    pub url: String,
    args: Vec<String>,
}

impl Exporter {
    /// The built-in demo on 4 ranks as docs/live.md shows it: rank 1 carries three times
    /// the work, rank 2 is the straggler, so sorts and the imbalance view show something.
    pub fn skewed_demo() -> Exporter {
        Exporter::start(&[
            "--demo",
            "--demo-ranks",
            "4",
            "--demo-skew",
            "1",
            "--demo-slow",
            "2",
        ])
    }

    /// Starts the binary with `args` on a free port and waits until it answers.
    pub fn start(args: &[&str]) -> Exporter {
        let port = free_port();
        let mut e = Exporter {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        e.restart();
        e
    }

    /// Starts it (again) on the same port, as an operator restarting it would.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args(&self.args)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fpm-exporter");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("{}/healthz", self.url)).is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "the exporter did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it at once (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The simulated engine alone (`fpm-exporter demo`), publishing on ipc sockets of its
/// own: an engine that can be stopped while the exporter stays up.
pub struct Demo {
    child: Child,
    /// The base endpoint (rank r on `<base>.r`), for the exporter's `--endpoint`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts `ranks` simulated ranks.
    pub fn start(ranks: u64) -> Demo {
        let dir = tempfile::Builder::new()
            .prefix("fpm-live")
            .tempdir()
            .unwrap();
        let endpoint = format!("ipc://{}/rank", dir.path().display());
        let child = Command::new(env!("CARGO_BIN_EXE_fpm-exporter"))
            .args([
                "demo",
                "--endpoint",
                &endpoint,
                "--ranks",
                &ranks.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fpm-exporter demo");
        Demo {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// Kills the engine at once: its ranks fall silent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An exporter subscribed to `demo`'s two ranks as engine `gpu`, quick to call them
/// stale (1 s) and expired (4 s).
pub fn exporter_of(demo: &Demo) -> Exporter {
    Exporter::start(&[
        "--endpoint",
        &demo.endpoint,
        "--ranks",
        "2",
        "--engine",
        "gpu",
        "--stale-after",
        "1s",
        "--expire-after",
        "4s",
    ])
}

/// Two demo ranks as engine `gpu` whose load snapshots SGLang's real
/// `ShmLoadSnapshotWriter` writes (dp ranks 0 and 1), and an exporter joining them.
pub struct KvUse {
    /// The exporter, its TOML naming the snapshot files.
    pub exporter: Exporter,
    _demo: Demo,
    _writers: crate::common::snapshots::Writers,
    _dir: tempfile::TempDir,
}

impl KvUse {
    /// Starts the writers, the demo and the exporter.
    pub fn start() -> KvUse {
        let dir = tempfile::tempdir().unwrap();
        let (writers, files) = crate::common::snapshots::Writers::start(dir.path(), 1, 2, 20, 30.0);
        let id = files.as_object().unwrap().keys().next().unwrap().clone();
        let demo = Demo::start(2);
        let glob = format!("{}/sglang_loads_{id}_*.shm", dir.path().display());
        let config = dir.path().join("engines.toml");
        let toml = format!(
            "[[engine]]\nname = \"gpu\"\nendpoint = \"{}\"\nranks = 2\nload_snapshot = \"{glob}\"\n",
            demo.endpoint
        );
        std::fs::write(&config, toml).unwrap();
        KvUse {
            exporter: Exporter::start(&["--config", config.to_str().unwrap()]),
            _demo: demo,
            _writers: writers,
            _dir: dir,
        }
    }
}

/// Polls `check` every 100 ms until it gives Some, or panics after `limit` with `what`
/// and the last thing seen.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen:\n{seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
