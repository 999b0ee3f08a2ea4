//! `fpm-exporter replay FILE...`: publishes a capture again over ZMQ, as the engines
//! would, so that a planner or router can be tested offline and a user's capture can
//! reproduce a bug.
//!
//! One PUB socket per dp_rank found in the capture, on the engines' convention: rank
//! r on port + r (tcp) or `<base>.<r>` (ipc). Frames go out in file order at their
//! recorded pace divided by `speed` (0: as fast as possible), through
//! [`FramePublisher`], so the bytes are the engines' bytes; as with a restarted
//! engine, sequence numbers and `counter_id` start again at 0 on every socket.

use super::FramePublisher;
use crate::address::rank_address;
use crate::wire::decode::AnyFormat;
use crate::wire::{ForwardPassMetrics, SUPPORTED_VERSION};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the sockets stay open after the last frame (see the end of [`run`]).
pub const LINGER: Duration = Duration::from_secs(1);

/// What to replay, where and how fast.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Capture files, played one after the other in this order.
    pub files: Vec<PathBuf>,
    /// Base endpoint: `tcp://HOST:PORT` or `ipc:///PATH`.
    pub endpoint: String,
    /// 1.0 is the recorded pace, 2.0 twice as fast, 0 as fast as possible.
    pub speed: f64,
    /// Pause between binding and the first frame, so subscribers can connect (ZMQ
    /// PUB drops what is sent before a subscriber has joined).
    pub wait: Duration,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    /// Frames published.
    pub frames: u64,
    /// Lines that were not a valid capture record (skipped, with a warning).
    pub skipped_lines: u64,
    /// dp ranks published on.
    pub ranks: Vec<u64>,
    /// Capture time spanned, from first to last record, seconds.
    pub capture_secs: f64,
    /// Time spent publishing (after the initial wait), seconds.
    pub elapsed_secs: f64,
}

#[derive(Deserialize)]
struct Record {
    received_at_ns: u64,
    metrics: AnyFormat,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplayError(pub String);

/// Reads every record of the files in order, calling `each` with the record or, for
/// an unusable line, `None` (after logging why).
fn for_each_record(
    files: &[PathBuf],
    mut each: impl FnMut(Option<(u64, ForwardPassMetrics)>) -> bool,
) -> Result<(), ReplayError> {
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| ReplayError(format!("{}: {e}", path.display())))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line =
                line.map_err(|e| ReplayError(format!("{} line {}: {e}", path.display(), n + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            let record = match serde_json::from_str::<Record>(&line) {
                Ok(r) if r.metrics.0.version == SUPPORTED_VERSION => {
                    Some((r.received_at_ns, r.metrics.0))
                }
                Ok(r) => {
                    tracing::warn!(file = %path.display(), line = n + 1, version = r.metrics.0.version, "skipped a record of an unsupported version");
                    None
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipped a line that is not a capture record");
                    None
                }
            };
            if !each(record) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Replays the capture until it ends or `stop` turns true.
pub async fn run(
    options: &ReplayOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<ReplayReport, ReplayError> {
    // Bounded so that a recorded offset divided by the speed is always a valid Duration.
    if !(options.speed == 0.0 || (0.001..=1e6).contains(&options.speed)) {
        return Err(ReplayError(format!(
            "--speed {}: use 0 (as fast as possible) or a factor from 0.001 to 1000000",
            options.speed
        )));
    }
    if options.files.is_empty() {
        return Err(ReplayError("give at least one capture file".into()));
    }
    // First pass: which ranks, and whether there is anything to send.
    let mut ranks = BTreeMap::new();
    let mut span = (u64::MAX, 0u64);
    let mut report = ReplayReport::default();
    for_each_record(&options.files, |r| {
        match r {
            Some((ns, m)) => {
                ranks.entry(m.dp_rank).or_insert(());
                span = (span.0.min(ns), span.1.max(ns));
            }
            None => report.skipped_lines += 1,
        }
        true
    })?;
    if ranks.is_empty() {
        return Err(ReplayError("no capture records in the given files".into()));
    }
    report.ranks = ranks.keys().copied().collect();
    report.capture_secs = span.1.saturating_sub(span.0) as f64 / 1e9;
    let mut publishers = BTreeMap::new();
    for &r in &report.ranks {
        let address = rank_address(&options.endpoint, r)
            .map_err(|e| ReplayError(format!("--endpoint for dp_rank {r}: {e}")))?;
        let p = FramePublisher::bind(&address)
            .await
            .map_err(|e| ReplayError(format!("cannot bind {address}: {e}")))?;
        tracing::info!(%address, dp_rank = r, "replay publisher bound");
        publishers.insert(r, p);
    }
    tokio::select! {
        _ = tokio::time::sleep(options.wait) => {}
        _ = stop.wait_for(|s| *s) => return Ok(report),
    }

    // Second pass: publish. Records are streamed through a small channel so a large
    // capture is never held in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, ForwardPassMetrics)>(1024);
    let files = options.files.clone();
    let reader = tokio::task::spawn_blocking(move || {
        for_each_record(&files, |r| match r {
            Some(rec) => tx.blocking_send(rec).is_ok(),
            None => true,
        })
    });
    let started = Instant::now();
    let t0 = tokio::time::Instant::now();
    let mut first_ns = None;
    while let Some((ns, mut m)) = rx.recv().await {
        if options.speed > 0.0 {
            let first = *first_ns.get_or_insert(ns);
            let offset =
                Duration::from_secs_f64(ns.saturating_sub(first) as f64 / 1e9 / options.speed);
            tokio::select! {
                _ = tokio::time::sleep_until(t0 + offset) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        } else if *stop.borrow() {
            break;
        }
        let Some(p) = publishers.get_mut(&m.dp_rank) else {
            continue;
        };
        if let Err(e) = p.send(&mut m).await {
            return Err(ReplayError(format!("publishing on {}: {e}", p.address)));
        }
        report.frames += 1;
    }
    drop(rx);
    report.elapsed_secs = started.elapsed().as_secs_f64();
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(ReplayError(format!("reading the capture failed: {e}"))),
    }
    // The zeromq crate drops whatever is still queued when a PUB socket closes and has
    // no flush, so the sockets stay open long enough for the last frames to leave
    // even on a loaded machine (the earlier 200 ms left little room for that).
    tokio::time::sleep(LINGER).await;
    for (_, p) in publishers {
        p.close().await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &std::path::Path, files: Vec<PathBuf>, speed: f64) -> ReplayOptions {
        ReplayOptions {
            files,
            endpoint: format!("ipc://{}/r", dir.display()),
            speed,
            wait: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn bad_lines_are_skipped_and_bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cap = dir.path().join("cap.jsonl");
        let good = |rank: u64, ns: u64| {
            format!(
                "{{\"received_at_ns\":{ns},\"metrics\":{{\"version\":1,\"worker_id\":\"w\",\"dp_rank\":{rank},\"counter_id\":9,\"wall_time\":0.01}}}}\n"
            )
        };
        let text = [
            good(0, 1_000),
            "not json\n".to_string(),
            "{\"received_at_ns\":5,\"metrics\":{\"version\":2}}\n".to_string(),
            "{\"received_at_ns\":5,\"metrics\":{\"version\":1,\"wall_time\":-1.0}}\n".to_string(),
            "\n".to_string(),
            good(3, 2_000),
            good(0, 3_000),
        ]
        .concat();
        std::fs::write(&cap, text).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let report = run(&options(dir.path(), vec![cap.clone()], 0.0), rx.clone())
            .await
            .unwrap();
        assert_eq!(report.frames, 3);
        assert_eq!(
            report.skipped_lines, 3,
            "garbage, an unknown version, a negative wall_time"
        );
        assert_eq!(report.ranks, vec![0, 3]);
        assert!((report.capture_secs - 2e-6).abs() < 1e-12);

        let e = run(
            &options(dir.path(), vec![dir.path().join("missing")], 1.0),
            rx.clone(),
        )
        .await
        .unwrap_err();
        assert!(e.0.contains("missing"), "{e}");
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, "garbage\n").unwrap();
        let e = run(&options(dir.path(), vec![empty], 1.0), rx.clone())
            .await
            .unwrap_err();
        assert!(e.0.contains("no capture records"), "{e}");
        let e = run(&options(dir.path(), vec![cap.clone()], -1.0), rx.clone())
            .await
            .unwrap_err();
        assert!(e.0.contains("--speed"), "{e}");
        let e = run(
            &options(dir.path(), vec![cap.clone()], f64::NAN),
            rx.clone(),
        )
        .await
        .unwrap_err();
        assert!(e.0.contains("--speed"), "{e}");
        let e = run(&options(dir.path(), vec![cap], 1e-300), rx)
            .await
            .unwrap_err();
        assert!(e.0.contains("--speed"), "{e}");
    }
}
