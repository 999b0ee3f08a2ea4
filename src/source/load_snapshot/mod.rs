//! The engines' own load snapshots: SGLang's schedulers write a `LoadSnapshot` per dp
//! rank into `/dev/shm/sglang_loads_<instance>_<digest>.shm` on every iteration, in
//! every mode (HTTP, gRPC, `sgl.Engine`). Each engine with a `load_snapshot` path or
//! glob has its files found (the glob again at most once a second, so an engine
//! restarted under a new random instance id is picked up), read on demand (a scrape,
//! a `/v1/loads` request) and put into `state::load_snapshots`.
//!
//! A file whose snapshots are all older than `--expire-after` (a dead engine's: the
//! writer never removes it) or that cannot be read (bad header, no permission) is set
//! aside and looked at again only a few at a time, every [`RECHECK_AFTER`], so
//! thousands of leftover files cost nothing per request. See
//! `proto/load-snapshot.md` and `docs/engine-load.md`.

pub mod file;
pub mod reasons;

use crate::state::load_snapshots::{FileSnapshots, SnapshotStore};
use crate::wire::load_snapshot::{self, LoadSnapshot};
use file::Slot;
use parking_lot::Mutex;
use reasons::{Counters, Reason};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Least time between two listings of an engine's glob.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// A set-aside file is read again after this long, [`RECHECK_PER_PASS`] at a time.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);
/// Set-aside files read again per listing.
pub const RECHECK_PER_PASS: usize = 16;

/// One engine's `load_snapshot` setting.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    /// Index of its engine.
    pub engine: usize,
    /// A path, or a glob (`*`, `?`, `[...]`) matching the engine's files.
    pub pattern: String,
}

/// Why a file is set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aside {
    /// Every snapshot older than `--expire-after`.
    Expired,
    /// Could not be read, for this reason.
    Rejected(Reason),
}

#[derive(Default)]
struct SlotCache {
    /// The bytes last read and what they decoded to (None: refused, counted once).
    bytes: Vec<u8>,
    decoded: Option<Arc<LoadSnapshot>>,
    too_long: u32,
}

struct Tracked {
    path: Arc<str>,
    instance: Arc<str>,
    ident: Option<(u64, u64)>,
    dp_size: u16,
    slots: Vec<SlotCache>,
    first_seen: Instant,
}

struct SetAside {
    why: Aside,
    since: Instant,
}

#[derive(Default)]
struct Inner {
    last_listing: Option<Instant>,
    tracked: BTreeMap<PathBuf, Tracked>,
    aside: BTreeMap<PathBuf, SetAside>,
}

/// One engine's snapshot source.
pub struct EngineSource {
    /// Index of the engine.
    pub engine: usize,
    /// Its `load_snapshot` pattern.
    pub pattern: String,
    /// Counters by reason, reads and lock time.
    pub counters: Counters,
    literal: bool,
    inner: Mutex<Inner>,
}

/// Every engine's snapshot source, and the store they fill.
pub struct LoadSnapshots {
    /// The snapshots read.
    pub store: Arc<SnapshotStore>,
    /// One per engine with a `load_snapshot`.
    pub engines: Vec<EngineSource>,
}

/// One file as `/v1/engines` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileStatus {
    /// Its path.
    pub path: String,
    /// `read` (its ranks carry their own state), `expired` or `rejected`.
    pub state: &'static str,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl LoadSnapshots {
    /// Sources for `specs`, filling a store for `engines` (name of each engine).
    pub fn new(
        specs: &[SnapshotSpec],
        engines: &[String],
        stale_after: Duration,
        expire_after: Duration,
    ) -> Self {
        let with: Vec<usize> = specs.iter().map(|s| s.engine).collect();
        LoadSnapshots {
            store: Arc::new(SnapshotStore::new(
                engines.len(),
                &with,
                stale_after,
                expire_after,
            )),
            engines: specs
                .iter()
                .map(|s| EngineSource {
                    engine: s.engine,
                    pattern: s.pattern.clone(),
                    counters: Counters::new(&engines[s.engine], None),
                    literal: !s.pattern.contains(['*', '?', '[']),
                    inner: Mutex::default(),
                })
                .collect(),
        }
    }

    /// Reads every engine's files now.
    pub fn refresh(&self) {
        for e in &self.engines {
            e.refresh(&self.store);
        }
    }

    /// Reads every engine's files now and returns their ranks keyed for the FPM joins.
    pub fn join_now(&self) -> crate::state::load_snapshots::SnapshotJoin {
        self.refresh();
        self.store.join(crate::state::load_snapshots::unix_now())
    }

    /// Reads one engine's files now (nothing if it has no source).
    pub fn refresh_engine(&self, engine: usize) {
        for e in self.engines.iter().filter(|e| e.engine == engine) {
            e.refresh(&self.store);
        }
    }
}

/// The instance id in SGLang's file name (`shm_path_for`), or the file's name.
pub fn instance_of(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_prefix("sglang_loads_")
        .and_then(|s| s.strip_suffix(".shm"))
        .and_then(|s| s.rsplit_once('_'))
        .filter(|(_, digest)| digest.len() == 8 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(id, _)| id.to_owned());
    stem.unwrap_or(name)
}

impl EngineSource {
    /// Every file found, read or set aside, with its state.
    pub fn status(&self, limit: usize) -> (Vec<FileStatus>, usize) {
        let inner = self.inner.lock();
        let mut out: Vec<FileStatus> = inner
            .tracked
            .values()
            .map(|t| FileStatus {
                path: t.path.to_string(),
                state: "read",
                reason: None,
            })
            .collect();
        for (p, a) in &inner.aside {
            out.push(FileStatus {
                path: p.display().to_string(),
                state: match a.why {
                    Aside::Expired => "expired",
                    Aside::Rejected(_) => "rejected",
                },
                reason: match a.why {
                    Aside::Rejected(r) => Some(r.as_str()),
                    Aside::Expired => None,
                },
            });
        }
        let total = out.len();
        out.truncate(limit);
        (out, total)
    }

    /// Files set aside, by kind: (expired, rejected).
    pub fn aside_counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let expired = inner
            .aside
            .values()
            .filter(|a| a.why == Aside::Expired)
            .count();
        (expired, inner.aside.len() - expired)
    }

    fn list(&self, inner: &mut Inner) {
        let now = Instant::now();
        if inner
            .last_listing
            .is_some_and(|t| now.duration_since(t) < DISCOVER_EVERY)
        {
            return;
        }
        inner.last_listing = Some(now);
        let mut found: Vec<PathBuf> = Vec::new();
        if self.literal {
            let p = PathBuf::from(&self.pattern);
            // Not `exists()`: a directory the exporter may not search is EACCES, not
            // a missing file.
            match std::fs::metadata(&p) {
                Ok(_) => found.push(p),
                Err(e) => {
                    let reason = match e.kind() {
                        std::io::ErrorKind::NotFound => Reason::Missing,
                        std::io::ErrorKind::PermissionDenied => Reason::Permission,
                        _ => Reason::Io,
                    };
                    self.counters.count(reason, &self.pattern, &e.to_string());
                }
            }
        } else {
            match glob::glob(&self.pattern) {
                Ok(paths) => {
                    for entry in paths {
                        match entry {
                            Ok(p) => found.push(p),
                            Err(e) => self.counters.count(
                                Reason::Directory,
                                &e.path().display().to_string(),
                                &e.error().to_string(),
                            ),
                        }
                    }
                }
                Err(e) => self
                    .counters
                    .count(Reason::Io, &self.pattern, &e.to_string()),
            }
        }
        found.sort();
        inner.tracked.retain(|p, _| found.binary_search(p).is_ok());
        inner.aside.retain(|p, _| found.binary_search(p).is_ok());
        // A few set-aside files are read again: a restart under the same id, a fixed
        // permission.
        let due: Vec<PathBuf> = inner
            .aside
            .iter()
            .filter(|(_, a)| now.duration_since(a.since) >= RECHECK_AFTER)
            .take(RECHECK_PER_PASS)
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            inner.aside.remove(&p);
            let t = new_tracked(&p, now);
            inner.tracked.insert(p, t);
        }
        for p in found {
            if !inner.tracked.contains_key(&p) && !inner.aside.contains_key(&p) {
                let t = new_tracked(&p, now);
                inner.tracked.insert(p, t);
            }
        }
    }

    /// Lists (when due) and reads the engine's files, then hands them to `store`.
    pub fn refresh(&self, store: &SnapshotStore) {
        let mut inner = self.inner.lock();
        self.list(&mut inner);
        let now = Instant::now();
        let now_unix = crate::state::load_snapshots::unix_now();
        let mut aside: Vec<(PathBuf, Aside)> = Vec::new();
        let mut gone: Vec<PathBuf> = Vec::new();
        for (p, t) in inner.tracked.iter_mut() {
            match file::read(p) {
                Err(file::FileError(Reason::Missing, _)) => gone.push(p.clone()),
                Err(file::FileError(reason, msg)) => {
                    self.counters.count(reason, &t.path, &msg);
                    aside.push((p.clone(), Aside::Rejected(reason)));
                }
                Ok(read) => {
                    self.note_read(&read);
                    self.take(t, read);
                    let newest = t
                        .slots
                        .iter()
                        .filter_map(|s| s.decoded.as_ref().map(|d| d.timestamp()))
                        .fold(0.0, f64::max);
                    let expired = if newest > 0.0 {
                        store.expired(newest, now_unix)
                    } else {
                        // Placeholders only: judged by how long it has been seen so.
                        now.duration_since(t.first_seen) >= store.expire_after()
                    };
                    if expired {
                        aside.push((p.clone(), Aside::Expired));
                    }
                }
            }
        }
        let expired = aside.iter().filter(|(_, a)| *a == Aside::Expired).count() as u64;
        for p in gone {
            inner.tracked.remove(&p);
        }
        for (p, why) in aside {
            inner.tracked.remove(&p);
            inner.aside.insert(p, SetAside { why, since: now });
        }
        let files = inner
            .tracked
            .values()
            .map(|t| FileSnapshots {
                path: t.path.clone(),
                instance: t.instance.clone(),
                dp_size: t.dp_size,
                slots: t.slots.iter().map(|s| s.decoded.clone()).collect(),
            })
            .collect();
        store.replace(self.engine, files, expired);
    }

    fn note_read(&self, read: &file::FileRead) {
        let c = &self.counters;
        c.reads.fetch_add(1, Relaxed);
        let ns = read.lock_held.as_nanos() as u64;
        c.lock_held_ns.fetch_add(ns, Relaxed);
        c.lock_held_max_ns.fetch_max(ns, Relaxed);
    }

    /// Folds a read into the file's slots: unchanged bytes keep their decoded
    /// snapshot; a bad slot is counted once per new content, not once per read.
    fn take(&self, t: &mut Tracked, read: file::FileRead) {
        if t.ident.is_some_and(|id| id != read.ident) {
            self.counters.count(
                Reason::Replaced,
                &t.path,
                "another file at this path: its slots start afresh",
            );
            t.slots.clear();
        }
        t.ident = Some(read.ident);
        t.dp_size = read.dp_size;
        t.slots.resize_with(read.slots.len(), SlotCache::default);
        for (r, (slot, cache)) in read.slots.into_iter().zip(&mut t.slots).enumerate() {
            match slot {
                Slot::Empty => *cache = SlotCache::default(),
                Slot::TooLong(len) => {
                    if cache.too_long != len {
                        let what = format!("slot {r}: length {len} past the slot");
                        self.counters.count(Reason::SlotLength, &t.path, &what);
                    }
                    *cache = SlotCache {
                        too_long: len,
                        ..Default::default()
                    };
                }
                Slot::Payload(bytes) => {
                    if bytes == cache.bytes {
                        continue;
                    }
                    let decoded = match load_snapshot::decode(&bytes) {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            let what = format!("slot {r}: {e}");
                            self.counters.count(Reason::Decode, &t.path, &what);
                            None
                        }
                    };
                    *cache = SlotCache {
                        bytes,
                        decoded,
                        too_long: 0,
                    };
                }
            }
        }
    }
}

fn new_tracked(p: &std::path::Path, now: Instant) -> Tracked {
    Tracked {
        path: p.display().to_string().into(),
        instance: instance_of(p).into(),
        ident: None,
        dp_size: 0,
        slots: Vec::new(),
        first_seen: now,
    }
}
