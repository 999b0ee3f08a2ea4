//! The engines' own Prometheus metrics, read from their `PROMETHEUS_MULTIPROC_DIR`
//! (`prometheus_client` multiprocess mode) at scrape time: [`mod@file`] reads one `.db`
//! file, [`merge`] applies `MultiProcessCollector`'s rules. See
//! proto/multiproc-format.md for the format and where each rule comes from.
//!
//! Cost is bounded per scrape: at most `max_bytes` read per directory (each file
//! costs its `used` bytes, [`file::OPEN_COST`] and the span of values it re-reads), at
//! most [`MAX_FILES`] files listed, and keys are parsed once and cached, so a steady
//! directory costs one `pread` per file and a pass over its values.
//!
//! A read cut short by that budget is not merged: leaving its files out would make
//! the counters summed over them go down (and up again at the next full read, a
//! counter reset to Prometheus). The last complete read is served again instead
//! (nothing before the first one), and the cut is counted.

pub mod exposed;
pub mod file;
pub mod keys;
pub mod limit;
pub mod merge;
pub mod plan;
mod scan;

use crate::wire::exposition::MetricFamily;
use exposed::Exposed;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Default of [`MultiprocSettings::max_bytes`]: 64 MiB per directory per scrape.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Most directory entries looked at per scrape.
pub const MAX_FILES: usize = 65_536;
/// Parsed keys cached per directory before the cache is dropped and rebuilt.
const MAX_CACHED_KEYS: usize = 1 << 20;

/// Why a file (or the directory) was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The directory does not exist or cannot be listed.
    NoDirectory,
    /// A `.db` file whose name is no `prometheus_client` kind/mode, or not a regular file.
    BadName,
    /// A negative `used` header.
    BadHeader,
    /// The file is shorter than its `used` header says.
    Truncated,
    /// An entry's length runs past `used`.
    Corrupt,
    /// A key that is not `[metric, sample, {labels}, help]` JSON with valid names.
    BadKey,
    /// A value kept changing across every re-read.
    Unstable,
    /// An I/O error other than the file vanishing.
    Io,
    /// The per-scrape byte budget was spent before this file.
    ByteLimit,
    /// Samples whose name does not fit their family's type (counted per sample).
    BadSample,
    /// A family left out of an exposition because another with its name came first.
    FamilyClash,
}

impl Reason {
    /// Every reason, in the order of [`Reason::as_str`].
    pub const ALL: [Reason; 11] = [
        Reason::NoDirectory,
        Reason::BadName,
        Reason::BadHeader,
        Reason::Truncated,
        Reason::Corrupt,
        Reason::BadKey,
        Reason::Unstable,
        Reason::Io,
        Reason::ByteLimit,
        Reason::BadSample,
        Reason::FamilyClash,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoDirectory => "no_directory",
            Reason::BadName => "bad_name",
            Reason::BadHeader => "bad_header",
            Reason::Truncated => "truncated",
            Reason::Corrupt => "corrupt",
            Reason::BadKey => "bad_key",
            Reason::Unstable => "unstable",
            Reason::Io => "io",
            Reason::ByteLimit => "byte_limit",
            Reason::BadSample => "bad_sample",
            Reason::FamilyClash => "family_clash",
        }
    }
}

/// Settings shared by every directory.
#[derive(Debug, Clone, Copy)]
pub struct MultiprocSettings {
    /// Bytes read per directory per scrape, at most.
    pub max_bytes: u64,
    /// Leave out live-mode gauge files whose pid has no `/proc/<pid>` (needs the
    /// exporter to see the engine's processes).
    pub pid_check: bool,
}

impl Default for MultiprocSettings {
    fn default() -> Self {
        MultiprocSettings {
            max_bytes: DEFAULT_MAX_BYTES,
            pid_check: true,
        }
    }
}

#[derive(Default)]
struct Cache {
    layouts: HashMap<OsString, file::Layout>,
    keys: merge::Keys,
    scratch: scan::Scratch,
    plan: plan::Plan,
    /// Every entry's (key, value, timestamp) of the latest scrape, reused.
    values: Vec<(u32, f64, f64)>,
}

/// One engine's multiprocess directory.
pub struct MultiprocDir {
    /// The engine's name (its `engine` label).
    pub engine: String,
    /// The engine's configured labels.
    pub labels: Vec<(String, String)>,
    /// The directory.
    pub path: PathBuf,
    /// Its `worker_addr` label in the fan-in: the directory as configured.
    pub worker_addr: String,
    settings: MultiprocSettings,
    cache: Mutex<Cache>,
    errors: [AtomicU64; Reason::ALL.len()],
    files: AtomicU64,
    cut_reads: AtomicU64,
    log: limit::LogLimit,
}

impl MultiprocDir {
    /// The labels every sample of this directory carries: `engine`, the engine's
    /// configured labels, then `worker_addr` (the directory).
    pub fn own_labels(&self) -> Vec<(&str, &str)> {
        let mut l = vec![("engine", self.engine.as_str())];
        l.extend(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        l.push(("worker_addr", self.worker_addr.as_str()));
        l
    }

    /// A directory of engine `engine` with its labels.
    pub fn new(
        engine: &str,
        labels: &[(String, String)],
        path: PathBuf,
        settings: MultiprocSettings,
    ) -> Self {
        MultiprocDir {
            engine: engine.to_owned(),
            labels: labels.to_vec(),
            worker_addr: path.to_string_lossy().into_owned(),
            path,
            settings,
            cache: Mutex::new(Cache::default()),
            errors: Default::default(),
            files: AtomicU64::new(0),
            cut_reads: AtomicU64::new(0),
            log: limit::LogLimit::default(),
        }
    }

    /// The same directory with its warnings limited on `clock` instead of the real one.
    pub fn with_clock(mut self, clock: limit::Clock) -> Self {
        self.log = limit::LogLimit::new(clock);
        self
    }

    /// Errors counted so far for `reason`.
    pub fn errors(&self, reason: Reason) -> u64 {
        self.errors[reason as usize].load(Relaxed)
    }

    /// Files merged by the latest scrape.
    pub fn files(&self) -> u64 {
        self.files.load(Relaxed)
    }

    /// Reads cut short by the byte budget, so far (each served the last complete one).
    pub fn cut_reads(&self) -> u64 {
        self.cut_reads.load(Relaxed)
    }

    /// Counts a skipped file (or sample) and warns, at most once per 10 s.
    pub fn count(&self, reason: Reason, what: &str, n: u64) {
        self.errors[reason as usize].fetch_add(n, Relaxed);
        if self.log.allow() {
            tracing::warn!(engine = %self.engine, dir = %self.path.display(), reason = reason.as_str(), %what,
                "skipped part of an engine's multiprocess metrics (further warnings for this directory are held back for 10 s)");
        }
    }

    /// Reads and merges the directory now as owned families: (families, generation,
    /// see [`merge::Merged`]). A full merge each time, for callers that need the
    /// samples' labels (the `/v1/engines` view); [`MultiprocDir::collect_exposed`] is
    /// the scrape's cheap path. Never fails: what cannot be read is counted and left out.
    pub fn collect(&self) -> (Arc<Vec<MetricFamily>>, u64) {
        match self.read_and_merge(true) {
            Some(m) => (m.families.unwrap_or_default(), m.generation),
            None => (Arc::default(), 0),
        }
    }

    /// Reads and merges the directory now for rendering: while the series stay the
    /// same, only values are read and written into the kept layout.
    pub fn collect_exposed(&self) -> Arc<Exposed> {
        match self.read_and_merge(false) {
            Some(m) => m.exposed,
            None => Arc::new(Exposed::empty()),
        }
    }

    fn read_and_merge(&self, want_families: bool) -> Option<merge::Merged> {
        let mut cache = self.cache.lock();
        let cache = &mut *cache;
        if cache.keys.len() > MAX_CACHED_KEYS {
            *cache = Cache::default();
        }
        let listing = match std::fs::read_dir(&self.path) {
            Ok(l) => l,
            Err(e) => {
                cache.layouts.clear();
                // Not served again by a cut read once the directory is back.
                cache.plan = plan::Plan::default();
                self.files.store(0, Relaxed);
                self.count(Reason::NoDirectory, &e.to_string(), 1);
                return None;
            }
        };
        let proc_visible = self.settings.pid_check && std::path::Path::new("/proc/self").exists();
        let mut old = std::mem::take(&mut cache.layouts);
        let mut jobs = Vec::new();
        for entry in listing.take(MAX_FILES) {
            let Ok(entry) = entry else { continue };
            let os_name = entry.file_name();
            let Some(name) = os_name.to_str() else {
                continue; // Python's glob would not match it as text either
            };
            let parsed = match file::parse_name(name) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(reason) => {
                    self.count(reason, name, 1);
                    continue;
                }
            };
            if proc_visible && parsed.mode.is_some_and(|m| m.is_live()) && process_gone(&parsed.pid)
            {
                continue; // what mark_process_dead would have deleted
            }
            jobs.push(scan::Job {
                layout: old.remove(&os_name),
                path: entry.path(),
                name: os_name,
                parsed,
            });
        }
        drop(old);
        let mut values = std::mem::take(&mut cache.values);
        values.clear();
        let budget = self.settings.max_bytes;
        let outcomes = scan::read_all(
            jobs,
            &mut cache.keys,
            budget,
            &mut cache.scratch,
            &mut values,
        );
        let mut data = Vec::with_capacity(outcomes.len());
        let mut cut = false;
        for o in outcomes {
            match o.read {
                Ok(Some(r)) => {
                    let pid = cache.keys.pid(&o.parsed.pid);
                    let (dev, ino, used, n) = r.layout.identity();
                    let (kind, mode) = (o.parsed.kind, o.parsed.mode);
                    data.push(merge::FileData {
                        kind,
                        mode,
                        pid,
                        range: o.range,
                        fresh: r.fresh,
                        sig: (dev, ino, used, n, kind, mode, pid),
                    });
                    cache.layouts.insert(o.name, r.layout);
                }
                Ok(None) => {}
                Err(reason) => {
                    cut |= reason == Reason::ByteLimit;
                    self.count(reason, &o.name.to_string_lossy(), 1)
                }
            }
        }
        self.files.store(data.len() as u64, Relaxed);
        if cut {
            self.cut_reads.fetch_add(1, Relaxed);
            cache.values = values;
            // Only complete reads are merged, so the kept merge is the last complete one.
            let (exposed, generation) = cache.plan.last()?;
            return Some(merge::Merged {
                exposed,
                families: None,
                generation,
                dropped: 0,
            });
        }
        let own = self.own_labels();
        let merged = merge::merge(
            &cache.keys,
            &data,
            &values,
            &mut cache.plan,
            want_families,
            &own,
        );
        cache.values = values;
        if merged.dropped > 0 {
            self.count(
                Reason::BadSample,
                "samples not fitting their family's type",
                merged.dropped,
            );
        }
        Some(merged)
    }
}

/// Whether `pid` names a process that no longer exists on this host.
fn process_gone(pid: &str) -> bool {
    pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists()
}

/// The engines that have a multiprocess directory.
pub struct EngineMetrics {
    /// One per engine with a directory, in engine order.
    pub dirs: Vec<MultiprocDir>,
    /// Whether `/metrics` carries them too (`--merge-engine-metrics`).
    pub merge_into_metrics: bool,
}

impl EngineMetrics {
    /// Reads every directory for rendering: (directory, its merged families).
    pub fn collect(&self) -> Vec<(&MultiprocDir, Arc<Exposed>)> {
        self.dirs.iter().map(|d| (d, d.collect_exposed())).collect()
    }
}
