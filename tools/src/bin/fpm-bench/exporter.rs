//! The parent side of the re-exec protocol: a child exporter process, its CPU, memory
//! and counters, and its stop when dropped.

use crate::http::http_get;
use crate::procfs::proc_cpu_seconds;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child exporter process.
pub(crate) struct Exporter {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: String,
    pub(crate) perf: Option<Child>,
}

impl Exporter {
    pub(crate) async fn spawn(flags: &[&str]) -> Exporter {
        Self::spawn_env(flags, &[]).await
    }

    pub(crate) async fn spawn_env(flags: &[&str], env: &[(&str, &str)]) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().expect("own path");
        let child = Command::new(exe)
            .arg("serve")
            .args(["--listen", &addr])
            .args(flags)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn exporter");
        let pid = child.id();
        let e = Exporter {
            child,
            pid,
            addr,
            perf: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(&e.addr, "/healthz").is_err() {
            assert!(Instant::now() < deadline, "exporter did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e
    }

    pub(crate) fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid)
    }

    /// Server-side render timings, measured by the child (`serve::render_timings`).
    pub(crate) fn render_timings(&mut self) -> serde_json::Value {
        self.ask("render")
    }

    /// Live heap bytes of an exporter started with FPM_BENCH_COUNT_HEAP.
    pub(crate) fn heap_bytes(&mut self) -> f64 {
        self.ask("heap").as_f64().unwrap_or(f64::NAN)
    }

    /// One command on the serve process's stdin, one JSON line back.
    pub(crate) fn ask(&mut self, command: &str) -> serde_json::Value {
        let (Some(stdin), Some(stdout)) = (self.child.stdin.as_mut(), self.child.stdout.as_mut())
        else {
            return serde_json::Value::Null;
        };
        if writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return serde_json::Value::Null;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        serde_json::from_slice(&line).unwrap_or_default()
    }

    /// Profiling hook: with FPM_BENCH_PERF_DIR=dir set, records the exporter with perf
    /// from now until it stops, into `dir/<tag>.perf.data`.
    pub(crate) fn profile(&mut self, tag: &str) {
        let Ok(dir) = std::env::var("FPM_BENCH_PERF_DIR") else {
            return;
        };
        let out = format!("{dir}/{tag}.perf.data");
        self.perf = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "2000",
                "-g",
                "-p",
                &self.pid.to_string(),
                "-o",
                &out,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    pub(crate) fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    pub(crate) fn counters(&self) -> Counters {
        let body = http_get(&self.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        Counters::parse(&body)
    }

    pub(crate) async fn wait_ranks(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.counters().ranks >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut perf) = self.perf.take() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Totals over the per-rank counters of one /metrics scrape.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) frames: f64,
    pub(crate) missed: f64,
    pub(crate) ranks: usize,
}

impl Counters {
    pub(crate) fn parse(body: &str) -> Counters {
        let mut c = Counters::default();
        for line in body.lines() {
            let value = || {
                line.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("fpm_frames_total{") {
                c.frames += value();
                c.ranks += 1;
            } else if line.starts_with("fpm_missed_frames_total{") {
                c.missed += value();
            }
        }
        c
    }
}
