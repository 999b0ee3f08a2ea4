//! The engine workers of tests/py/scrape_worker.py: real HTTP servers, each in its
//! own process, on a free loopback port.

use super::{repo_root, venv_python};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A worker process; dropping it closes its stdin, which ends it.
pub struct Worker {
    /// The process.
    pub child: Child,
    /// Where it listens (`ready PORT`).
    pub port: u16,
}

impl Worker {
    /// Starts `scrape_worker.py MODE EXTRA...` and waits for its port.
    pub fn spawn(mode: &str, extra: &[&str]) -> Worker {
        super::require_test_deps();
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/py/scrape_worker.py"))
            .arg(mode)
            .args(extra)
            .args(["--max-seconds", "90"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("worker said {line:?}"))
            .trim()
            .parse()
            .unwrap();
        Worker { child, port }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
