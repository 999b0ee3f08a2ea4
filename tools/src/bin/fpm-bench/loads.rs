//! fpm-bench's `loads` section: SGLang's real `ShmLoadSnapshotWriter`s (sglang 0.5.23,
//! tests/py/load_snapshot_bench.py) write 64 dp ranks of one engine (one file, the
//! worst case for one lock hold: a read takes every slot under one shared lock) from
//! 8 processes at 100 snapshots/s per rank, while, in turn, nothing reads, the
//! exporter serves `/v1/loads` (64 ranks) 100 times a second, the exporter's own file
//! reader runs alone at that rate (for the lock-hold distribution), and SGLang's own
//! `ShmLoadSnapshotReader.read_all()` runs 100 times a second. Printed side by side:
//! CPU per read, how long the shared lock was held, and the writers' write latency in
//! each phase (a write waits while a reader holds the lock).

use super::{http_get, percentile, Bench, Exporter};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const DP_SIZE: u32 = 64;
const WRITER_PROCS: u32 = 8;
/// Snapshots per second per rank (SGLang writes one per scheduler iteration).
const WRITE_RATE: u32 = 100;
/// Reads per second: the most a scrape or a router poll asks.
const READ_RATE: u32 = 100;
const PHASE: Duration = Duration::from_secs(5);

/// The writers' control: a line in, a JSON line out.
struct Writers {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Writers {
    fn say(&mut self, line: &str) -> serde_json::Value {
        if writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return serde_json::Value::Null;
        }
        self.line()
    }

    fn line(&mut self) -> serde_json::Value {
        let mut l = String::new();
        let _ = self.stdout.read_line(&mut l);
        serde_json::from_str(&l).unwrap_or_default()
    }
}

/// The sum of every sample of `name` in a text exposition.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sleeps until the `i`th tick of `rate` per second after `start`.
async fn pace(start: Instant, i: u32, rate: u32) {
    let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
    tokio::time::sleep_until(at.into()).await;
}

impl Bench<'_> {
    pub(crate) async fn loads(&mut self) {
        let root = PathBuf::from(crate::REPO_ROOT);
        let python = self.python_path();
        let script = root.join("tests/py/load_snapshot_bench.py");
        let dir = std::env::temp_dir().join(format!("fpm-bench-loads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let path = dir.join("sglang_loads_bench_00000000.shm");
        let p = path.to_str().unwrap().to_owned();
        let spawned = Command::new(&python)
            .arg(&script)
            .args(["write", &p, &DP_SIZE.to_string(), &WRITER_PROCS.to_string()])
            .arg(WRITE_RATE.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.result(format!(
                    "loads: cannot run {} ({e}); run scripts/test-deps.sh",
                    python.display()
                ));
                return;
            }
        };
        let mut w = Writers {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
        };
        if w.line()["writing"].is_null() {
            let _ = child.kill();
            let _ = child.wait();
            self.result("loads: the writers did not start (see above)".into());
            return;
        }
        let exp = Exporter::spawn(&["--engine", "bench", "--load-snapshot", &p]).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let reads = (PHASE.as_secs() as u32) * READ_RATE;

        // 1. The writers alone.
        w.say("mark alone");
        tokio::time::sleep(PHASE).await;

        // 2. The exporter's /v1/loads at READ_RATE.
        w.say("mark exporter");
        let before = http_get(&exp.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let cpu0 = exp.cpu_seconds();
        let (mut served, mut ranks, mut times) = (0u32, 0usize, Vec::new());
        let start = Instant::now();
        for i in 0..reads {
            pace(start, i, READ_RATE).await;
            let t = Instant::now();
            if let Ok((200, body)) = http_get(&exp.addr, "/v1/loads") {
                times.push(t.elapsed().as_secs_f64() * 1e3);
                served += 1;
                ranks += body.matches("\"dp_rank\":").count();
            }
        }
        let cpu = exp.cpu_seconds() - cpu0;
        let after = http_get(&exp.addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let delta = |n: &str| metric(&after, n) - metric(&before, n);
        let file_reads = delta("fpm_load_snapshot_reads_total");
        let held_mean_us = delta("fpm_load_snapshot_lock_held_seconds_total") / file_reads * 1e6;
        let held_max_us = metric(&after, "fpm_load_snapshot_lock_held_max_seconds") * 1e6;
        drop(exp);

        // 3. The exporter's reader alone (the code /v1/loads runs), for the distribution.
        w.say("mark native");
        let mut held = Vec::with_capacity(reads as usize);
        let start = Instant::now();
        for i in 0..reads {
            pace(start, i, READ_RATE).await;
            if let Ok(r) = fpm_exporter::source::load_snapshot::file::read(&path) {
                held.push(r.lock_held.as_secs_f64() * 1e6);
            }
        }
        held.sort_by(f64::total_cmp);

        // 4. SGLang's own reader at READ_RATE.
        w.say("mark python");
        let py = Command::new(&python)
            .arg(&script)
            .args(["read", &p, &DP_SIZE.to_string(), &READ_RATE.to_string()])
            .arg(PHASE.as_secs_f64().to_string())
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .unwrap_or_default();
        let phases = w.say("end")["phases"].clone();
        drop(w);
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);

        times.sort_by(f64::total_cmp);
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        self.result(format!(
            "loads setup: SGLang's ShmLoadSnapshotWriter, {DP_SIZE} dp ranks in one file from {WRITER_PROCS} processes at {WRITE_RATE} snapshots/s per rank; {READ_RATE} reads/s for {} s per reader",
            PHASE.as_secs()
        ));
        self.result(format!(
            "loads read: exporter GET /v1/loads {served}/{reads} answered, {:.0} ranks each, median {:.2} ms (p99 {:.2}); CPU {:.0} us per read (file read, decode, JSON, HTTP) = {:.1}% of a core at {READ_RATE}/s",
            ranks as f64 / f64::from(served.max(1)),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            cpu / f64::from(served.max(1)) * 1e6,
            cpu / PHASE.as_secs_f64() * 100.0,
        ));
        self.result(format!(
            "loads read: SGLang ShmLoadSnapshotReader.read_all() {} reads, {:.0} ranks each; CPU {:.0} us per read (read and decode only) = {:.1}% of a core at {READ_RATE}/s",
            py["reads"],
            f(&py["ranks_per_read"]),
            f(&py["cpu_us_per_read"]),
            f(&py["cpu_us_per_read"]) * f64::from(READ_RATE) / 1e4,
        ));
        self.result(format!(
            "loads lock held: exporter p50 {:.1} us, p99 {:.1} us, max {:.1} us ({} reads of its reader alone); in /v1/loads mean {held_mean_us:.1} us, max since start {held_max_us:.1} us (fpm_load_snapshot_lock_held_*); SGLang read_all p50 {:.1} us, p99 {:.1} us, max {:.1} us (it decodes under the lock)",
            percentile(&held, 0.5),
            percentile(&held, 0.99),
            held.last().copied().unwrap_or(f64::NAN),
            held.len(),
            f(&py["lock_held_p50_us"]),
            f(&py["lock_held_p99_us"]),
            f(&py["lock_held_max_us"]),
        ));
        for (name, what) in [
            ("alone", "no reader"),
            ("exporter", "exporter /v1/loads at 100/s"),
            ("native", "exporter's reader alone at 100/s"),
            ("python", "SGLang read_all at 100/s"),
        ] {
            let ph = &phases[name];
            self.result(format!(
                "loads write latency, {what:<34}: p50 {:>6.1} us, p99 {:>6.1} us, max {:>7.1} us ({} writes)",
                f(&ph["p50_us"]),
                f(&ph["p99_us"]),
                f(&ph["max_us"]),
                ph["writes"],
            ));
        }
    }
}
