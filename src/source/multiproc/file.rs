//! One `prometheus_client` multiprocess file (0.26.0 `mmap_dict.py`): its name says
//! the kind, gauge mode and pid; its bytes are a `used` header and 8-byte aligned
//! entries `len i32, key, space padding, value f64, timestamp f64`.
//!
//! Why plain `pread` rather than `memmap2`: a mapping of a file that another process
//! truncates (or that lies about its size) raises SIGBUS on access, which would kill
//! the exporter; a read just comes back short and the file is counted and skipped.
//! Reading at most `used` bytes costs the same copy the kernel would do on faults.

use super::Reason;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The file kinds `prometheus_client` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter_<pid>.db`.
    Counter,
    /// `histogram_<pid>.db`.
    Histogram,
    /// `summary_<pid>.db`.
    Summary,
    /// `gauge_<mode>_<pid>.db`.
    Gauge,
}

/// The ten gauge multiprocess modes (`Gauge._MULTIPROC_MODES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One sample per process, with a `pid` label.
    All,
    /// Like `All`, for live processes only.
    LiveAll,
    /// Minimum over processes.
    Min,
    /// Minimum over live processes.
    LiveMin,
    /// Maximum over processes.
    Max,
    /// Maximum over live processes.
    LiveMax,
    /// Sum over processes.
    Sum,
    /// Sum over live processes.
    LiveSum,
    /// The value with the newest timestamp.
    MostRecent,
    /// The newest value among live processes.
    LiveMostRecent,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "all" => Mode::All,
            "liveall" => Mode::LiveAll,
            "min" => Mode::Min,
            "livemin" => Mode::LiveMin,
            "max" => Mode::Max,
            "livemax" => Mode::LiveMax,
            "sum" => Mode::Sum,
            "livesum" => Mode::LiveSum,
            "mostrecent" => Mode::MostRecent,
            "livemostrecent" => Mode::LiveMostRecent,
            _ => return None,
        })
    }

    /// Live modes: `mark_process_dead` deletes their files when a process ends.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Mode::LiveAll | Mode::LiveMin | Mode::LiveMax | Mode::LiveSum | Mode::LiveMostRecent
        )
    }

    /// Whether merged samples keep the `pid` label (only `all` and `liveall`).
    pub fn keeps_pid(self) -> bool {
        matches!(self, Mode::All | Mode::LiveAll)
    }
}

/// What a file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Kind of the samples in it.
    pub kind: Kind,
    /// Gauge mode (gauges only).
    pub mode: Option<Mode>,
    /// The `pid` label value, exactly as Python takes it: `name.split('_')[2][:-3]`.
    pub pid: String,
}

/// Parses a directory entry's name. `Ok(None)`: not a file the Python collector reads
/// (its glob is `*.db`, which skips dot files); `Err`: a `.db` file it would choke on.
pub fn parse_name(name: &str) -> Result<Option<FileName>, Reason> {
    if !name.ends_with(".db") || name.starts_with('.') {
        return Ok(None);
    }
    let parts: Vec<&str> = name.split('_').collect();
    let kind = match parts[0] {
        "counter" => Kind::Counter,
        "histogram" => Kind::Histogram,
        "summary" => Kind::Summary,
        "gauge" => Kind::Gauge,
        _ => return Err(Reason::BadName),
    };
    if kind != Kind::Gauge {
        return (parts.len() >= 2)
            .then_some(Some(FileName {
                kind,
                mode: None,
                pid: String::new(),
            }))
            .ok_or(Reason::BadName);
    }
    let (Some(mode), Some(last)) = (parts.get(1).and_then(|m| Mode::parse(m)), parts.get(2)) else {
        return Err(Reason::BadName);
    };
    // Python slices three characters off whatever the third part is.
    let pid: String = {
        let chars: Vec<char> = last.chars().collect();
        chars[..chars.len().saturating_sub(3)].iter().collect()
    };
    Ok(Some(FileName {
        kind,
        mode: Some(mode),
        pid,
    }))
}

/// Where each entry of a file sits, kept between scrapes: entries are only ever
/// appended, so a file whose `used` grew is parsed from its old `used` on. It is
/// used again only if its entries' key bytes are the ones it was parsed from
/// (its `digest`): a file deleted and written again under the same pid can get
/// the same inode (ext4 reuses them), `used` and key lengths, with its keys in
/// another order.
#[derive(Debug, Default)]
pub struct Layout {
    dev: u64,
    ino: u64,
    used: usize,
    /// A keyed hash of every entry's length field, key and padding, in file order
    /// ([`digest_entries`]).
    digest: u64,
    /// (offset of the entry's length field, key length, offset of its value, key id).
    entries: Vec<(u32, u32, u32, u32)>,
    /// Each entry's value and timestamp bytes as the last scrape settled them.
    slots: Vec<[u8; 16]>,
}

impl Layout {
    /// Device, inode, `used` and entry count: with the name's facts, what tells a
    /// scrape that a file's entries are the ones it had.
    pub fn identity(&self) -> (u64, u64, usize, usize) {
        (self.dev, self.ino, self.used, self.entries.len())
    }
}

/// One read of a file: its layout for the next scrape; its (key id, value, timestamp)
/// per entry, in file order, went to the caller's list.
pub struct Read {
    /// The layout to keep.
    pub layout: Layout,
    /// Whether any entry was (re)parsed (a new file, new entries, a changed layout).
    pub fresh: bool,
}

/// Reusable read buffers.
#[derive(Default)]
pub struct Buffers {
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Bytes charged against the per-scrape budget for opening a file, so that a
/// directory of many tiny files is bounded too.
pub const OPEN_COST: u64 = 4096;

/// Reads a file, appending its entries to `values`: `Ok(None)` when it vanished
/// since the listing (on an error, what it appended is to be dropped). The `used` region is
/// read once; the value slots that differ from the last scrape's (only those can be
/// mid-write) are read a second time, and one that differs between the two reads is
/// re-read on its own until two reads agree, so no value is ever torn. A steady file
/// costs one read of `used` bytes; a file whose every value moved, two.
pub fn read(
    path: &Path,
    cached: Option<Layout>,
    intern: &mut dyn FnMut(&[u8]) -> Option<u32>,
    budget: &mut u64,
    bufs: &mut Buffers,
    values: &mut Vec<(u32, f64, f64)>,
) -> Result<Option<Read>, Reason> {
    // O_NONBLOCK: a FIFO named like a .db file must not hang the scrape in open().
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(Reason::Io),
    };
    let meta = file.metadata().map_err(|_| Reason::Io)?;
    if !meta.is_file() {
        return Err(Reason::BadName);
    }
    let size = meta.len();
    if size == 0 {
        // Created and not yet sized by its writer.
        return Ok(Some(Read {
            layout: Layout::default(),
            fresh: false,
        }));
    }
    let mut header = [0u8; 8];
    file.read_exact_at(&mut header, 0).map_err(short)?;
    let used = i32::from_ne_bytes(header[..4].try_into().expect("4 bytes"));
    if used < 0 {
        return Err(Reason::BadHeader);
    }
    let used = used as usize;
    if used as u64 > size {
        return Err(Reason::Truncated);
    }
    let cost = OPEN_COST + used as u64;
    if cost > *budget {
        return Err(Reason::ByteLimit);
    }
    *budget -= cost;
    if used <= 8 {
        return Ok(Some(Read {
            layout: Layout::default(),
            fresh: false,
        }));
    }
    // Grown, never shrunk: zeroing the buffer again for every file costs as much as
    // a tenth of the read.
    if bufs.a.len() < used {
        bufs.a.resize(used, 0);
    }
    let a = &mut bufs.a[..used];
    file.read_exact_at(a, 0).map_err(short)?;
    let a = &*a;

    // The key bytes were read anyway: hashing them is a pass over memory still in
    // cache, where keeping a copy to compare with would double the keys' memory.
    let reuse = cached.filter(|l| {
        l.dev == meta.dev()
            && l.ino == meta.ino()
            && l.used <= used
            && digest_entries(0, a, &l.entries) == l.digest
    });
    let (mut entries, mut slots, mut pos, digest) = match reuse {
        Some(l) => (l.entries, l.slots, l.used, l.digest),
        None => (Vec::new(), Vec::new(), 8, 0),
    };
    let fresh = pos < used;
    let parsed_from = entries.len();
    while pos < used {
        let len = entry_len(a, pos).ok_or(Reason::Corrupt)?;
        let padded = len + (8 - (len + 4) % 8);
        let value_at = pos + 4 + padded;
        if value_at + 16 > used {
            return Err(Reason::Corrupt);
        }
        let key = intern(&a[pos + 4..pos + 4 + len]).ok_or(Reason::BadKey)?;
        entries.push((pos as u32, len as u32, value_at as u32, key));
        pos = value_at + 16;
    }
    let digest = digest_entries(digest, a, &entries[parsed_from..]);
    // A slot a writer may have been writing during the read is one whose bytes differ
    // from the last scrape's (or that is new): only the span of those is read again.
    let slot = |buf: &[u8], at: u32| -> [u8; 16] {
        let at = at as usize;
        buf[at..at + 16].try_into().expect("16 bytes")
    };
    let changed = |i: usize| slots.get(i) != Some(&slot(a, entries[i].2));
    let first = (0..entries.len()).find(|&i| changed(i));
    let span = first.map(|f| {
        let last = (f..entries.len()).rev().find(|&i| changed(i)).unwrap_or(f);
        (entries[f].2 as usize, entries[last].2 as usize + 16)
    });
    if let Some((from, to)) = span {
        let n = (to - from) as u64;
        *budget = budget.saturating_sub(n);
        if bufs.b.len() < to - from {
            bufs.b.resize(to - from, 0);
        }
        file.read_exact_at(&mut bufs.b[..to - from], from as u64)
            .map_err(short)?;
    }
    slots.resize(entries.len(), [0; 16]);
    if fresh {
        // Kept until the file changes: no growth slack held for a directory's lifetime.
        entries.shrink_to_fit();
        slots.shrink_to_fit();
    }
    values.reserve(entries.len());
    for (i, &(_, _, at, key)) in entries.iter().enumerate() {
        let mut s = slot(a, at);
        if let Some((from, to)) = span {
            let o = at as usize;
            if (from..to).contains(&o) && bufs.b[o - from..o - from + 16] != s {
                s = settle(&file, o as u64)?;
            }
        }
        slots[i] = s;
        let value = f64::from_ne_bytes(s[..8].try_into().expect("8 bytes"));
        let ts = f64::from_ne_bytes(s[8..].try_into().expect("8 bytes"));
        values.push((key, value, ts));
    }
    Ok(Some(Read {
        layout: Layout {
            dev: meta.dev(),
            ino: meta.ino(),
            used,
            digest,
            entries,
            slots,
        },
        fresh,
    }))
}

/// `digest` (0 for none before) continued over `entries`' length fields, keys and
/// padding in `buf`, in order: a hash per entry, folded. Seeded at random per
/// process, so no writer can aim for a collision.
fn digest_entries(mut digest: u64, buf: &[u8], entries: &[(u32, u32, u32, u32)]) -> u64 {
    use rapidhash::v3::{rapidhash_v3_seeded, RapidSecrets};
    static SECRETS: std::sync::OnceLock<RapidSecrets> = std::sync::OnceLock::new();
    let secrets = SECRETS.get_or_init(|| {
        use std::hash::BuildHasher;
        RapidSecrets::seed(std::hash::RandomState::new().hash_one(0x6d70_u64))
    });
    for &(at, _, value_at, _) in entries {
        let h = rapidhash_v3_seeded(&buf[at as usize..value_at as usize], secrets);
        // Odd multiplier: each step is a bijection, and the order of entries counts.
        digest = (digest ^ h).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    digest
}

/// The key length at `pos`, if the length field fits and is not negative.
fn entry_len(buf: &[u8], pos: usize) -> Option<usize> {
    let raw = buf.get(pos..pos + 4)?;
    let len = i32::from_ne_bytes(raw.try_into().ok()?);
    (len >= 0).then_some(len as usize)
}

/// Re-reads one 16-byte value slot until two consecutive reads agree.
fn settle(file: &File, at: u64) -> Result<[u8; 16], Reason> {
    let mut prev = [0u8; 16];
    file.read_exact_at(&mut prev, at).map_err(short)?;
    for _ in 0..32 {
        let mut next = [0u8; 16];
        file.read_exact_at(&mut next, at).map_err(short)?;
        if next == prev {
            return Ok(next);
        }
        prev = next;
    }
    Err(Reason::Unstable)
}

fn short(e: std::io::Error) -> Reason {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Reason::Truncated
    } else {
        Reason::Io
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as `mmap_dict.py` lays it out: `used`, padding, entries.
    fn db(entries: &[(&str, f64)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, v) in entries {
            body.extend((key.len() as i32).to_ne_bytes());
            body.extend(key.as_bytes());
            body.extend(std::iter::repeat_n(b' ', 8 - (key.len() + 4) % 8));
            body.extend(v.to_ne_bytes());
            body.extend(0f64.to_ne_bytes());
        }
        let mut f = ((8 + body.len()) as i32).to_ne_bytes().to_vec();
        f.extend([0; 4]);
        f.extend(body);
        f
    }

    /// Reads `path` with `cached`: (key, value) per entry, and the layout; `names`
    /// interns the keys across reads.
    fn read_keys(
        path: &Path,
        cached: Option<Layout>,
        names: &mut Vec<String>,
    ) -> (Vec<(String, f64)>, Layout) {
        let mut intern = |raw: &[u8]| {
            let k = String::from_utf8(raw.to_vec()).unwrap();
            let id = names.iter().position(|n| *n == k).unwrap_or_else(|| {
                names.push(k);
                names.len() - 1
            });
            Some(id as u32)
        };
        let (mut budget, mut bufs, mut values) = (u64::MAX, Buffers::default(), Vec::new());
        let r = read(
            path,
            cached,
            &mut intern,
            &mut budget,
            &mut bufs,
            &mut values,
        )
        .unwrap()
        .unwrap();
        let got = values
            .iter()
            .map(|&(k, v, _)| (names[k as usize].clone(), v))
            .collect();
        (got, r.layout)
    }

    #[test]
    fn a_layout_is_reused_only_over_the_same_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("counter_1.db");
        let mut names = Vec::new();
        std::fs::write(&p, db(&[("aa", 1.0), ("bb", 2.0)])).unwrap();
        let (got, layout) = read_keys(&p, None, &mut names);
        assert_eq!(got, [("aa".into(), 1.0), ("bb".into(), 2.0)]);
        // Rewritten in place (same inode), same lengths, keys swapped.
        std::fs::write(&p, db(&[("bb", 20.0), ("aa", 10.0)])).unwrap();
        let (got, layout) = read_keys(&p, Some(layout), &mut names);
        assert_eq!(got, [("bb".into(), 20.0), ("aa".into(), 10.0)]);
        // Rewritten and grown: the old prefix no longer matches, so all is parsed.
        std::fs::write(&p, db(&[("aa", 3.0), ("bb", 4.0), ("cc", 5.0)])).unwrap();
        let (got, layout) = read_keys(&p, Some(layout), &mut names);
        assert_eq!(
            got,
            [("aa".into(), 3.0), ("bb".into(), 4.0), ("cc".into(), 5.0)]
        );
        // Appended to, as a writer does: the kept prefix is reused, the rest parsed.
        std::fs::write(
            &p,
            db(&[("aa", 3.0), ("bb", 4.0), ("cc", 5.0), ("dd", 6.0)]),
        )
        .unwrap();
        let (got, _) = read_keys(&p, Some(layout), &mut names);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3], ("dd".into(), 6.0));
    }

    #[test]
    fn names_are_read_as_python_splits_them() {
        let g = parse_name("gauge_livesum_1234.db").unwrap().unwrap();
        assert_eq!(
            (g.kind, g.mode, g.pid.as_str()),
            (Kind::Gauge, Some(Mode::LiveSum), "1234")
        );
        assert!(g.mode.unwrap().is_live() && !g.mode.unwrap().keeps_pid());
        // Python's `split('_')[2][:-3]`, even for odd names.
        assert_eq!(parse_name("gauge_all_12_3.db").unwrap().unwrap().pid, "");
        assert_eq!(
            parse_name("counter_77.db").unwrap().unwrap().kind,
            Kind::Counter
        );
        assert_eq!(parse_name(".counter_1.db").unwrap(), None);
        assert_eq!(parse_name("counter_1.txt").unwrap(), None);
        assert!(parse_name("info_1.db").is_err());
        assert!(parse_name("gauge_median_1.db").is_err());
        assert!(parse_name("gauge_all.db").is_err());
    }
}
