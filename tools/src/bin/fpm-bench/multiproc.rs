//! fpm-bench's `multiproc` section: a `PROMETHEUS_MULTIPROC_DIR` as SGLang leaves it (64 live
//! Python processes, each writing every metric SGLang 0.5.23 defines through the real
//! prometheus_client, tests/py/multiproc.py), read by Python's `MultiProcessCollector` +
//! `generate_latest` and by the exporter's `/engine_metrics`, side by side.

use super::{http_get, http_get_timed, percentile, Bench, Exporter};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROCESSES: u32 = 64;
const SCRAPES: usize = 50;

/// Runs `python script args...` and parses its stdout as JSON; `Null` (after saying why
/// on stderr) when it cannot run or fails, so a section reports instead of panicking.
pub(crate) fn python_json(
    python: &std::path::Path,
    script: &std::path::Path,
    args: &[&str],
) -> serde_json::Value {
    match Command::new(python).arg(script).args(args).output() {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_default(),
        Ok(o) => {
            eprintln!("fpm-bench: {}", String::from_utf8_lossy(&o.stderr));
            serde_json::Value::Null
        }
        Err(e) => {
            eprintln!(
                "fpm-bench: cannot run {} ({e}); run scripts/test-deps.sh",
                python.display()
            );
            serde_json::Value::Null
        }
    }
}

impl Bench<'_> {
    pub(crate) async fn multiproc(&mut self) {
        let root = PathBuf::from(crate::REPO_ROOT);
        let python = self.python_path();
        let script = root.join("tests/py/multiproc.py");
        let dir = std::env::temp_dir().join(format!("fpm-bench-mp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let d = dir.to_str().unwrap().to_owned();
        let run = |args: &[&str]| python_json(&python, &script, args);
        // The writers stay alive (as an engine's processes do) until their stdin closes.
        let procs = PROCESSES.to_string();
        let writers = Command::new(&python)
            .arg(&script)
            .args(["bench-write", "--dir", &d, "--procs", &procs])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut writers = match writers {
            Ok(w) => w,
            Err(e) => {
                self.result(format!(
                    "multiproc: cannot run {} ({e}); run scripts/test-deps.sh",
                    python.display()
                ));
                return;
            }
        };
        let mut line = String::new();
        if let Some(out) = writers.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let written: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if written.is_null() {
            let _ = writers.kill();
            let _ = writers.wait();
            self.result("multiproc: could not write the directory (see above)".into());
            return;
        }
        let py = run(&["bench-python", "--dir", &d, "--runs", "5"]);
        let py_ms = py["median_ms"].as_f64().unwrap_or(f64::NAN);

        let exp = Exporter::spawn(&["--multiproc-dir", &d]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss0 = exp.rss_bytes();
        let cold = http_get_timed(&exp.addr, "/engine_metrics").map(|r| r.2);
        let rss_cold = exp.rss_bytes();
        let mut times = Vec::with_capacity(SCRAPES);
        let mut bytes = 0;
        // The body is streamed, so the head (the first byte) goes out before the
        // work and the rest is work and transfer overlapping. The client reads
        // into one reused buffer, so its own page faults are not timed.
        let mut work = Vec::with_capacity(SCRAPES);
        let mut transfer = Vec::with_capacity(SCRAPES);
        let mut buf = Vec::with_capacity(32 << 20);
        for _ in 0..SCRAPES {
            if let Ok((first, total)) = get_split(&exp.addr, "/engine_metrics", &mut buf) {
                if !buf.starts_with(b"TTP/1.1 200") {
                    continue;
                }
                let head = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                bytes = buf.len() - head - 4;
                times.push(total.as_secs_f64() * 1e3);
                work.push(first.as_secs_f64() * 1e3);
                transfer.push((total - first).as_secs_f64() * 1e3);
            }
        }
        let rss1 = exp.rss_bytes();
        work.sort_by(f64::total_cmp);
        transfer.sort_by(f64::total_cmp);
        times.sort_by(f64::total_cmp);
        let ours = percentile(&times, 0.5);
        let samples = http_get(&exp.addr, "/engine_metrics")
            .map(|(_, b)| b.lines().filter(|l| !l.starts_with('#')).count())
            .unwrap_or(0);
        drop(exp);
        drop(writers.stdin.take());
        let _ = writers.wait();
        let _ = std::fs::remove_dir_all(&dir);
        self.result(format!(
            "multiproc directory: {PROCESSES} processes x {} SGLang families, {} files, {:.1} MB on disk; samples served: exporter {samples}, python {}",
            written["families"],
            written["files"],
            written["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            py["samples"],
        ));
        let cold_ms = cold.map(|t| t.as_secs_f64() * 1e3).unwrap_or(f64::NAN);
        self.result(format!(
            "multiproc scrape: exporter /engine_metrics median {ours:.2} ms (p90 {:.2}, first scrape {cold_ms:.1} ms, {:.0} KB) vs python MultiProcessCollector+generate_latest median {py_ms:.0} ms",
            percentile(&times, 0.9),
            bytes as f64 / 1e3,
        ));
        self.result(format!(
            "multiproc scrape split: median time to first byte (exporter's work) {:.2} ms, rest of the body (transfer, into a reused client buffer) {:.2} ms, same {SCRAPES} scrapes",
            percentile(&work, 0.5),
            percentile(&transfer, 0.5),
        ));
        let mb = |b: u64| b as f64 / 1e6;
        let growth = |a: u64, b: u64| (b as f64 - a as f64) / 1e6;
        self.result(format!(
            "multiproc memory: exporter RSS {:.1} MB before, {:.1} MB after the first scrape (+{:.1}), {:.1} MB after {} more (+{:.1} steady): growth {:.1} MB",
            mb(rss0),
            mb(rss_cold),
            growth(rss0, rss_cold),
            mb(rss1),
            SCRAPES,
            growth(rss_cold, rss1),
            growth(rss0, rss1),
        ));
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        let total = growth(rss0, rss1);
        for (what, target, result, ok) in [
            (
                "steady scrape, median",
                "<= 10 ms".to_owned(),
                format!("{ours:.2} ms"),
                ours <= 10.0,
            ),
            (
                "speed-up over python",
                ">= 50x".to_owned(),
                format!("{:.0}x", py_ms / ours),
                py_ms / ours >= 50.0,
            ),
            (
                "RSS growth (first + steady)",
                "< 20 MB".to_owned(),
                format!("{total:.1} MB"),
                total < 20.0,
            ),
        ] {
            self.result(format!(
                "multiproc target: {what:<28} target {target:<9} result {result:<10} {}",
                met(ok)
            ));
        }
    }
}

/// One `GET` on a new connection: (time to the first response byte, time to the last);
/// `buf` gets the response after its first byte.
fn get_split(addr: &str, path: &str, buf: &mut Vec<u8>) -> std::io::Result<(Duration, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    buf.clear();
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let at_first = t.elapsed();
    s.read_to_end(buf)?;
    Ok((at_first, t.elapsed()))
}
