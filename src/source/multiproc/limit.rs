//! "Logged at most once per 10 s": a directory's warnings about skipped files, held
//! back between two warnings, on a clock tests can replace (so proving the limit
//! needs no 10 s sleep).

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Least time between two warnings about one directory.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where the limiter reads the time.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Lets one warning through per [`LOG_EVERY`].
pub struct LogLimit {
    clock: Clock,
    last: Mutex<Option<Instant>>,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(Arc::new(Instant::now))
    }
}

impl LogLimit {
    /// A limiter on `clock`.
    pub fn new(clock: Clock) -> Self {
        LogLimit {
            clock,
            last: Mutex::new(None),
        }
    }

    /// Whether a warning may be logged now (and, if so, starts a new quiet period).
    pub fn allow(&self) -> bool {
        let now = (self.clock)();
        let mut last = self.last.lock();
        if last.is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY) {
            *last = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MultiprocDir, MultiprocSettings, Reason};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Collects everything the fmt layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn warnings(&self) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains("skipped part of an engine's multiprocess metrics"))
                .map(str::to_owned)
                .collect()
        }
    }

    #[test]
    fn bad_files_are_counted_every_time_and_logged_at_most_once_per_10s() {
        let dir = std::env::temp_dir().join(format!("fpm-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = Instant::now();
        let ms = Arc::new(AtomicU64::new(0));
        let at = ms.clone();
        let settings = MultiprocSettings {
            pid_check: false,
            ..Default::default()
        };
        let d =
            MultiprocDir::new("e", &[], dir.clone(), settings).with_clock(Arc::new(move || {
                base + Duration::from_millis(at.load(Relaxed))
            }));
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let scrape_at = |t: u64| {
                ms.store(t, Relaxed);
                d.collect();
            };
            // The directory does not exist yet: every scrape counts it, one warns.
            for t in [0, 1_000, 9_999] {
                scrape_at(t);
            }
            assert_eq!(d.errors(Reason::NoDirectory), 3);
            assert_eq!(out.warnings().len(), 1, "{:?}", out.warnings());
            scrape_at(10_000);
            assert_eq!(d.errors(Reason::NoDirectory), 4);
            assert_eq!(out.warnings().len(), 2, "10 s later the next one is logged");
            // Another reason inside the quiet period is counted but held back too.
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("counter_1.db"), (-1i32).to_ne_bytes().repeat(4)).unwrap();
            scrape_at(15_000);
            scrape_at(19_999);
            assert_eq!(d.errors(Reason::BadHeader), 2);
            assert_eq!(out.warnings().len(), 2);
            scrape_at(20_000);
            let w = out.warnings();
            assert_eq!(w.len(), 3);
            assert!(
                w[2].contains("bad_header") && w[2].contains("counter_1.db"),
                "{}",
                w[2]
            );
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
