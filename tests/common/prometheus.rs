//! A real Prometheus server (Debian's package, installed by scripts/test-deps.sh) on
//! loopback, with a temporary TSDB, a 1 s scrape interval, and a kill on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One scrape job: its name, metrics path and targets (host:port).
pub struct Job<'a> {
    /// `job_name`.
    pub name: &'a str,
    /// `metrics_path`.
    pub path: &'a str,
    /// The targets.
    pub targets: &'a [String],
}

/// A Prometheus server on loopback, killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its base URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) every second as job `job`,
    /// evaluating `rules` (a rule file) every second when given.
    pub fn start(job: &str, targets: &[String], rules: Option<&Path>) -> Prometheus {
        Prometheus::start_jobs(
            &[Job {
                name: job,
                path: "/metrics",
                targets,
            }],
            rules,
        )
    }

    /// Starts Prometheus scraping every job every second.
    pub fn start_jobs(jobs: &[Job], rules: Option<&Path>) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("fpm-prom")
            .tempdir()
            .unwrap();
        let port = super::free_port();
        let config = dir.path().join("prometheus.yml");
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - \"{}\"\n", r.display()))
            .unwrap_or_default();
        let mut scrape = String::new();
        for j in jobs {
            let targets: Vec<String> = j.targets.iter().map(|t| format!("\"{t}\"")).collect();
            scrape.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      - targets: [{}]\n",
                j.name,
                j.path,
                targets.join(", ")
            ));
        }
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 {rule_files}scrape_configs:\n{scrape}"
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("prometheus on PATH (scripts/test-deps.sh installs Debian's prometheus)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// Its active targets, as `/api/v1/targets` lists them (health, lastError...).
    pub async fn active_targets(&self) -> Vec<serde_json::Value> {
        let targets: serde_json::Value = reqwest::get(format!("{}/api/v1/targets", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        targets["data"]["activeTargets"].as_array().unwrap().clone()
    }

    /// The last 30 lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
