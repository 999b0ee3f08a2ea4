//! fpm-bench's `fanin` section: 64 remote workers, each serving the exposition of
//! SGLang 0.5.23's real family set (definitions extracted from the wheel, written by
//! the real prometheus_client's `generate_latest`; tests/py/scrape_worker.py), as
//! static bodies from one Python process with 64 listening ports. The exporter scrapes
//! them (`--scrape` x 64); measured: `/engine_metrics` answered from the cache, and
//! the parse cost per sample, ours against `prometheus_client.parser`.

use super::{http_get, http_get_timed, percentile, Bench, Exporter};
use fpm_exporter::source::scrape::parse;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: usize = 64;
const SCRAPES: usize = 50;
const PARSES: usize = 200;

impl Bench<'_> {
    pub(crate) async fn fanin(&mut self) {
        let root = PathBuf::from(crate::REPO_ROOT);
        let python = self.python_path();
        let script = root.join("tests/py/scrape_worker.py");
        let file =
            std::env::temp_dir().join(format!("fpm-bench-fanin-{}.prom", std::process::id()));
        let f = file.to_str().unwrap().to_owned();
        let json = |args: &[&str]| super::multiproc::python_json(&python, &script, args);
        let made = json(&["sglang-exposition", "--file", &f]);
        if made.is_null() {
            self.result("fanin: could not write the SGLang exposition (see above)".into());
            return;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();

        // Parse cost per sample, the same input for both.
        let py = json(&["parse-python", "--file", &f, "--runs", "20"]);
        let py_ms = py["median_ms"].as_f64().unwrap_or(f64::NAN);
        let mut times = Vec::with_capacity(PARSES);
        let mut samples = 0;
        for _ in 0..PARSES {
            let t = Instant::now();
            let p = parse::parse(&text, false).expect("generate_latest output parses");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            samples = p.samples;
        }
        times.sort_by(f64::total_cmp);
        let ours_ms = percentile(&times, 0.5);
        let per = |ms: f64| ms * 1e6 / samples.max(1) as f64;
        self.result(format!(
            "fanin parse: SGLang exposition {} samples, {:.0} KB: ours median {ours_ms:.3} ms ({:.0} ns/sample) vs prometheus_client.parser {py_ms:.1} ms ({:.0} ns/sample) = {:.0}x",
            samples,
            text.len() as f64 / 1e3,
            per(ours_ms),
            per(py_ms),
            py_ms / ours_ms,
        ));

        // 64 workers serving it; the exporter scraping them all.
        let count = WORKERS.to_string();
        let mut servers = match Command::new(&python)
            .arg(&script)
            .args([
                "files",
                "--file",
                &f,
                "--count",
                &count,
                "--max-seconds",
                "300",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(s) => s,
            Err(e) => {
                self.result(format!("fanin: cannot start the workers ({e})"));
                return;
            }
        };
        let mut line = String::new();
        if let Some(out) = servers.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let ports: Vec<String> = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or("")
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        if ports.len() != WORKERS {
            let _ = servers.kill();
            let _ = servers.wait();
            let _ = std::fs::remove_file(&file);
            self.result(format!(
                "fanin: the workers said {line:?}, not {WORKERS} ports"
            ));
            return;
        }
        let mut flags = vec!["--engine", "sglang", "--scrape-interval", "1s"];
        for p in &ports {
            flags.extend(["--scrape", p.as_str()]);
        }
        let exp = Exporter::spawn(&flags).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = 0;
        let mut round = f64::NAN;
        while Instant::now() < deadline {
            if let Ok((_, m)) = http_get(&exp.addr, "/metrics") {
                up = m
                    .lines()
                    .filter(|l| l.starts_with("fpm_engine_scrape_up{") && l.ends_with(" 1"))
                    .count();
                if up == ports.len() {
                    round = m
                        .lines()
                        .filter(|l| l.starts_with("fpm_engine_scrape_duration_seconds{"))
                        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                        .fold(0.0, f64::max);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut times = Vec::with_capacity(SCRAPES);
        let mut bytes = 0;
        for _ in 0..SCRAPES {
            if let Ok((200, n, t)) = http_get_timed(&exp.addr, "/engine_metrics") {
                bytes = n;
                times.push(t.as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        // The typed view of every worker, from the same cache (first request computes
        // nothing more than the later ones: views are computed per request).
        let mut view_times = Vec::with_capacity(SCRAPES);
        let mut view_bytes = 0;
        for _ in 0..SCRAPES {
            if let Ok((200, n, t)) = http_get_timed(&exp.addr, "/v1/engines") {
                view_bytes = n;
                view_times.push(t.as_secs_f64() * 1e3);
            }
        }
        view_times.sort_by(f64::total_cmp);
        let served = http_get(&exp.addr, "/engine_metrics")
            .map(|(_, b)| b.lines().filter(|l| !l.starts_with('#')).count())
            .unwrap_or(0);
        drop(exp);
        drop(servers.stdin.take());
        let _ = servers.kill();
        let _ = servers.wait();
        let _ = std::fs::remove_file(&file);
        self.result(format!(
            "fanin /engine_metrics from cache: {up}/{} workers up, {served} samples, {:.1} MB: median {:.1} ms (p90 {:.1} ms); slowest worker scrape {:.1} ms",
            ports.len(),
            bytes as f64 / 1e6,
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            round * 1e3,
        ));
        self.result(format!(
            "fanin /v1/engines from cache: {} workers, {:.1} KB: median {:.2} ms (p90 {:.2} ms)",
            ports.len(),
            view_bytes as f64 / 1e3,
            percentile(&view_times, 0.5),
            percentile(&view_times, 0.9),
        ));
    }
}
