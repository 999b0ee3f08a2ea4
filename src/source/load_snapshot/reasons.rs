//! Why a load-snapshot file (or one of its slots) was not taken: each reason is a
//! counter (`fpm_load_snapshot_errors_total{reason}`), and a warning is logged at most
//! once per 10 s per engine.

use crate::source::multiproc::limit::{Clock, LogLimit};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counted reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A configured path (not a glob) that is not there.
    Missing,
    /// `EACCES`: the exporter does not run as the engine's uid (the file is 0600).
    Permission,
    /// A directory of the glob could not be listed.
    Directory,
    /// Any other I/O error.
    Io,
    /// Shorter than the 12-byte header.
    TooSmall,
    /// Not `SLNS`.
    Magic,
    /// A layout version other than 2.
    Version,
    /// `dp_size` x `slot_size` past the file's end (or a zero or absurd size).
    Size,
    /// A slot's length past the slot's end.
    SlotLength,
    /// A payload that is not a `LoadSnapshot`.
    Decode,
    /// The file ended while read (truncated by someone without the lock).
    Truncated,
    /// The path now holds another file (another engine's, a restart's).
    Replaced,
}

/// Every reason, in counter order.
pub const REASONS: [Reason; 12] = [
    Reason::Missing,
    Reason::Permission,
    Reason::Directory,
    Reason::Io,
    Reason::TooSmall,
    Reason::Magic,
    Reason::Version,
    Reason::Size,
    Reason::SlotLength,
    Reason::Decode,
    Reason::Truncated,
    Reason::Replaced,
];

impl Reason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Permission => "permission",
            Reason::Directory => "directory",
            Reason::Io => "io",
            Reason::TooSmall => "too_small",
            Reason::Magic => "magic",
            Reason::Version => "version",
            Reason::Size => "size",
            Reason::SlotLength => "slot_length",
            Reason::Decode => "decode",
            Reason::Truncated => "truncated",
            Reason::Replaced => "replaced",
        }
    }
}

/// One engine's counters.
pub struct Counters {
    engine: String,
    errors: [AtomicU64; REASONS.len()],
    /// Reads of a file (each under one shared lock).
    pub reads: AtomicU64,
    /// Total time the shared lock was held, in nanoseconds.
    pub lock_held_ns: AtomicU64,
    /// Longest single hold, in nanoseconds.
    pub lock_held_max_ns: AtomicU64,
    log: LogLimit,
}

impl Counters {
    /// Counters of `engine`, warnings limited on `clock`.
    pub fn new(engine: &str, clock: Option<Clock>) -> Self {
        Counters {
            engine: engine.to_owned(),
            errors: Default::default(),
            reads: AtomicU64::new(0),
            lock_held_ns: AtomicU64::new(0),
            lock_held_max_ns: AtomicU64::new(0),
            log: clock.map(LogLimit::new).unwrap_or_default(),
        }
    }

    /// Counted so far for `reason`.
    pub fn errors(&self, reason: Reason) -> u64 {
        self.errors[reason as usize].load(Relaxed)
    }

    /// Counts `reason` for `path` and warns, at most once per 10 s.
    pub fn count(&self, reason: Reason, path: &str, what: &str) {
        self.errors[reason as usize].fetch_add(1, Relaxed);
        if !self.log.allow() {
            return;
        }
        if matches!(reason, Reason::Permission | Reason::Directory) {
            tracing::warn!(engine = %self.engine, file = %path, reason = reason.as_str(), %what,
                "cannot read an engine's load snapshot: run the exporter as the engine's uid (SGLang creates the file 0600; further warnings for this engine are held back for 10 s)");
        } else {
            tracing::warn!(engine = %self.engine, file = %path, reason = reason.as_str(), %what,
                "skipped an engine's load snapshot (further warnings for this engine are held back for 10 s)");
        }
    }
}
