//! SGLang's real load-snapshot writers (tests/py/load_snapshot_driver.py).

use super::{repo_root, venv_python};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The driver, killed when dropped.
pub struct Writers {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Writers {
    /// Starts ENGINES x RANKS writers at RATE for SECONDS; returns them and the files.
    pub fn start(
        dir: &std::path::Path,
        engines: u32,
        ranks: u32,
        rate: u32,
        secs: f64,
    ) -> (Writers, Value) {
        let module = repo_root().join("target/load-snapshot/load_snapshot.py");
        assert!(
            module.exists(),
            "run scripts/test-deps.sh first (it takes SGLang's load_snapshot.py out of the wheel)"
        );
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/py/load_snapshot_driver.py"))
            .args([
                dir.to_str().unwrap(),
                &engines.to_string(),
                &ranks.to_string(),
                &rate.to_string(),
                &secs.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("driver starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx
                    .send(serde_json::from_str(&line).expect("driver prints JSON"))
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut w = Writers { child, lines };
        let first = w.next(Duration::from_secs(20));
        (w, first["writing"].clone())
    }

    /// The next line the driver prints.
    pub fn next(&mut self, timeout: Duration) -> Value {
        self.lines.recv_timeout(timeout).expect("driver line")
    }

    /// The next line, if one came.
    pub fn try_next(&mut self) -> Option<Value> {
        self.lines.try_recv().ok()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        if let Some(mut s) = self.child.stdin.take() {
            let _ = s.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
