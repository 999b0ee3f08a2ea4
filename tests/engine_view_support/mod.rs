//! The test worker of tests/engine_view.rs (tests/py/engine_worker.py: SGLang's own
//! definitions served by the real prometheus_client) and a minimal reader of its
//! text exposition, for that test's own use.

use crate::common::{repo_root, require_test_deps, venv_python};
use fpm_exporter::wire::exposition::{FamilyType, MetricFamily, Sample, Scrape};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::SystemTime;

/// A running tests/py/engine_worker.py, killed on drop.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its /metrics port on 127.0.0.1.
    pub port: u16,
}

impl Worker {
    /// Starts the worker and reads the port it serves on.
    pub fn spawn() -> Worker {
        require_test_deps();
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/py/engine_worker.py"))
            .args(["--max-seconds", "240"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn engine_worker.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("worker said {line:?}"));
        Worker {
            child,
            stdin,
            stdout,
            port,
        }
    }

    /// Makes the worker observe `n` requests; returns what it says it added.
    pub fn observe(&mut self, seed: u64, n: u64) -> Value {
        writeln!(self.stdin, "observe {seed} {n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let json = line
            .strip_prefix("done ")
            .unwrap_or_else(|| panic!("{line:?}"));
        serde_json::from_str(json).unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal reader of the text format for this test's own use: `name{labels} value`
/// lines, comments skipped; the view under test reads samples by name only.
pub fn parse(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((name, rest)) => {
                let mut labels = Vec::new();
                let mut rest = rest.strip_suffix('}').unwrap();
                while let Some((k, after)) = rest.split_once("=\"") {
                    let mut v = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().unwrap() {
                            (_, '\\') => match chars.next().unwrap().1 {
                                'n' => v.push('\n'),
                                c => v.push(c),
                            },
                            (i, '"') => break i,
                            (_, c) => v.push(c),
                        }
                    };
                    labels.push((k.trim_start_matches(',').to_string(), v));
                    rest = &after[end + 1..];
                }
                (name, labels)
            }
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap(),
        });
    }
    out
}

/// One GET of the worker's /metrics, as a scrape completed now.
pub async fn read(client: &reqwest::Client, port: u16) -> Scrape {
    let body = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape {
        at: SystemTime::now(),
        families: vec![MetricFamily {
            name: "worker".into(),
            kind: FamilyType::Gauge,
            help: String::new(),
            samples: parse(&body),
        }],
    }
}
