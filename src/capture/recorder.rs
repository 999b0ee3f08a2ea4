//! `--record FILE`: every accepted frame as one JSON line in the format of Dynamo's
//! recorder, `{"received_at_ns": <unix ns>, "metrics": <FPM as on the wire>}`.
//!
//! Recording never slows ingestion. The recorder reads the registry's event ring
//! (the one `/v1/stream` uses), which ingestion writes without ever waiting; a task
//! turns frames into lines and hands chunks of lines to a writer thread through a
//! bounded channel. A frame is counted as dropped when the recorder fell behind the
//! ring or the channel was full. Chunks are handed over every second (and at 64 KiB),
//! so the file is at most about a second behind; at shutdown everything is written.
//!
//! Rotation (logrotate style): when the next line would take FILE past
//! `--record-max-bytes`, FILE is renamed FILE.1 (FILE.1 to FILE.2, ...; the oldest,
//! `FILE.<keep>`, is overwritten) and a new FILE is started. Lines never straddle files.
//! Disk use stays within about (keep + 1) x max-bytes.

use crate::config::record::{check_target, rotated, RecordSettings};
use crate::state::{EventKind, Registry};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

/// Lines are handed to the writer in chunks of about this size.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait for the writer (about 4 MiB); beyond this, frames are dropped.
const CHUNKS_QUEUED: usize = 64;
/// Longest time a line waits before it is handed to the writer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What the recorder did (exported as `fpm_record_*`).
#[derive(Debug, Default)]
pub struct RecordStats {
    /// Frames written.
    pub frames: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Frames lost because the recorder fell behind.
    pub dropped: AtomicU64,
    /// Rotations done.
    pub rotations: AtomicU64,
    /// Failed writes or rotations (their frames are counted as dropped too).
    pub write_errors: AtomicU64,
}

#[derive(Serialize)]
struct Line<'a> {
    received_at_ns: u64,
    metrics: &'a crate::wire::ForwardPassMetrics,
}

/// A running recorder.
pub struct Recorder {
    /// The collecting task (ends at shutdown after handing over everything).
    pub task: tokio::task::JoinHandle<()>,
    /// The writer thread (ends once the task is done and every chunk is written).
    pub writer: std::thread::JoinHandle<()>,
    /// Counters.
    pub stats: Arc<RecordStats>,
}

/// Creates FILE (refusing an existing one) and starts recording every frame the
/// registry accepts from now on. Must be called before the subscribers start.
pub fn start(
    registry: &Arc<Registry>,
    settings: RecordSettings,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Recorder> {
    check_target(&settings)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::AlreadyExists, m))?;
    let file = create(&settings.path)?;
    let stats = Arc::new(RecordStats::default());
    let (tx, rx) = sync_channel(CHUNKS_QUEUED);
    let rx_events = registry.subscribe();
    let writer = {
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("fpm-record".into())
            .spawn(move || {
                CaptureWriter {
                    file,
                    size: 0,
                    settings,
                    stats,
                    last_warning: None,
                }
                .run(rx)
            })?
    };
    let task = tokio::spawn(collect(rx_events, tx, stats.clone(), shutdown));
    Ok(Recorder {
        task,
        writer,
        stats,
    })
}

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("--record {}: cannot create it: {e}", path.display()),
            )
        })
}

struct Pending {
    buf: Vec<u8>,
    frames: u64,
}

impl Pending {
    fn hand_off(&mut self, tx: &SyncSender<(Vec<u8>, u64)>, stats: &RecordStats) {
        if self.frames == 0 {
            return;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 1024));
        let frames = std::mem::take(&mut self.frames);
        match tx.try_send((chunk, frames)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                stats.dropped.fetch_add(frames, Relaxed);
            }
        }
    }

    fn push(&mut self, ev: &crate::state::Event) {
        if let EventKind::Frame {
            received_at_ns,
            metrics,
            ..
        } = &ev.kind
        {
            let line = Line {
                received_at_ns: *received_at_ns,
                metrics,
            };
            serde_json::to_writer(&mut self.buf, &line)
                .expect("JSON of plain data into a Vec cannot fail");
            self.buf.push(b'\n');
            self.frames += 1;
        }
    }
}

async fn collect(
    mut rx: tokio::sync::broadcast::Receiver<Arc<crate::state::Event>>,
    tx: SyncSender<(Vec<u8>, u64)>,
    stats: Arc<RecordStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending = Pending {
        buf: Vec::with_capacity(CHUNK_BYTES + 1024),
        frames: 0,
    };
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    pending.push(&ev);
                    if pending.buf.len() >= CHUNK_BYTES {
                        pending.hand_off(&tx, &stats);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    stats.dropped.fetch_add(n, Relaxed);
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => pending.hand_off(&tx, &stats),
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    // Whatever was accepted before shutdown is still in the ring: write it too.
    loop {
        match rx.try_recv() {
            Ok(ev) => {
                pending.push(&ev);
                if pending.buf.len() >= CHUNK_BYTES {
                    pending.hand_off(&tx, &stats);
                }
            }
            Err(TryRecvError::Lagged(n)) => {
                stats.dropped.fetch_add(n, Relaxed);
            }
            Err(_) => break,
        }
    }
    pending.hand_off(&tx, &stats);
}

struct CaptureWriter {
    file: File,
    size: u64,
    settings: RecordSettings,
    stats: Arc<RecordStats>,
    /// When a failure was last logged (a full disk fails every chunk: log it rarely).
    last_warning: Option<std::time::Instant>,
}

impl CaptureWriter {
    fn run(mut self, rx: Receiver<(Vec<u8>, u64)>) {
        for (chunk, frames) in rx {
            match self.write_chunk(&chunk) {
                Ok(()) => {
                    self.stats.frames.fetch_add(frames, Relaxed);
                    self.stats.bytes.fetch_add(chunk.len() as u64, Relaxed);
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Relaxed);
                    self.stats.dropped.fetch_add(frames, Relaxed);
                    if self
                        .last_warning
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        self.last_warning = Some(std::time::Instant::now());
                        tracing::warn!(
                            file = %self.settings.path.display(),
                            error = %e,
                            frames,
                            write_errors = self.stats.write_errors.load(Relaxed),
                            "recording failed; frames dropped (logged at most every 10 s)"
                        );
                    }
                }
            }
        }
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(file = %self.settings.path.display(), error = %e, "could not sync the capture at shutdown");
        }
    }

    /// Writes whole lines, rotating before a line that would pass the size limit.
    fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let mut start = 0;
        while start < chunk.len() {
            let room = self.settings.max_bytes.saturating_sub(self.size);
            let mut end = start;
            for (i, _) in chunk[start..]
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
            {
                let line_end = start + i + 1;
                if (line_end - start) as u64 > room {
                    break;
                }
                end = line_end;
            }
            if end == start {
                if self.size > 0 {
                    self.rotate()?;
                    continue;
                }
                // One line longer than the limit: it gets a file of its own.
                end = chunk[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(chunk.len(), |i| start + i + 1);
            }
            self.file.write_all(&chunk[start..end])?;
            self.size += (end - start) as u64;
            start = end;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.settings.path;
        if self.settings.keep == 0 {
            std::fs::remove_file(path)?;
        } else {
            for n in (1..self.settings.keep).rev() {
                let from = rotated(path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(path, n + 1))?;
                }
            }
            std::fs::rename(path, rotated(path, 1))?;
        }
        self.file = create(path)?;
        self.size = 0;
        self.stats.rotations.fetch_add(1, Relaxed);
        tracing::info!(file = %path.display(), keep = self.settings.keep, "capture rotated");
        Ok(())
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
