//! Section python: the Python reference consumer next to the exporter.

use crate::load::{endpoint_base, Generator};
use crate::Bench;
use fpm_exporter::publisher::loadgen::Phase;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

impl Bench<'_> {
    pub(crate) async fn python(&mut self) {
        let python = self.python_path();
        let script = PathBuf::from(crate::REPO_ROOT).join("scripts/bench/py_consumer.py");
        let mut rates = Vec::new();
        for ranks in [1u64, 64] {
            let base = endpoint_base("tcp", ranks as u16, &format!("py{ranks}"));
            let mut cmd = Command::new(&python);
            cmd.arg(&script)
                .args(["--max-seconds", &format!("{}", self.args.seconds + 40.0)]);
            for r in 0..ranks {
                cmd.args([
                    "--endpoint",
                    &fpm_exporter::address::rank_address(&base, r).unwrap(),
                ]);
            }
            let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn() {
                Ok(c) => c,
                Err(e) => {
                    self.result(format!(
                        "python reference: cannot run {} ({e}); run scripts/test-deps.sh",
                        python.display()
                    ));
                    return;
                }
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let gen = Generator::start(
                &self.gen,
                &base,
                ranks,
                Some(self.args.max_rate),
                self.args.seconds,
                None,
            );
            let ready = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
            if !matches!(&ready, Ok(Some(l)) if l.contains("ready")) {
                eprintln!("fpm-bench: python consumer not ready: {ready:?}");
            }
            gen.set(Phase::Quiet);
            tokio::time::sleep(Duration::from_millis(300)).await;
            gen.set(Phase::Load);
            let done =
                tokio::time::timeout(Duration::from_secs_f64(self.args.seconds + 30.0), rx.recv())
                    .await;
            gen.set(Phase::Hold);
            let report = gen.finish().await;
            let _ = child.kill();
            let _ = child.wait();
            let v: serde_json::Value = match done {
                Ok(Some(l)) => serde_json::from_str(&l).unwrap_or_default(),
                _ => serde_json::Value::Null,
            };
            let rate = v["rate"].as_f64().unwrap_or(0.0);
            let frames = v["frames"].as_f64().unwrap_or(0.0);
            let cpu_us = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN) * 1e6 / frames.max(1.0);
            rates.push((ranks, rate, cpu_us));
            self.result(format!(
                "python reference {ranks:>2} ranks tcp (pyzmq + msgspec + WelfordAccumulator x14 + latest table): {rate:.0} frames/s, {cpu_us:.2} us CPU per frame (offered {:.0}/s, sent {}, processed {}, sequence gaps {})",
                report.offered_rate(),
                report.load_sent(),
                v["frames"],
                v["missed"]
            ));
        }
        // The ratio needs the exporter's figures at the same rank counts, same generator.
        for (ranks, py, py_cpu_us) in rates {
            let t = self.throughput("tcp", ranks, self.args.max_rate).await;
            let cpu_us = t.cpu_cores * 1e6 / t.rate.max(1.0);
            self.result(format!(
                "ratio {ranks:>2} ranks, same generator: frames/s exporter {:.0} / python {py:.0} = {:.1}x   [target >= 10x]; CPU per frame python {py_cpu_us:.2} us / exporter {cpu_us:.2} us = {:.1}x",
                t.rate,
                t.rate / py.max(1.0),
                py_cpu_us / cpu_us
            ));
        }
    }
}
