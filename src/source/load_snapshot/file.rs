//! Reading one load-snapshot file the way SGLang's `ShmLoadSnapshotReader` does
//! (`load_snapshot.py`: `_attach`, `read_all`, `_read_slot`): a shared `flock` on the
//! file, the header checked, then each slot's length and payload, all under the lock
//! so no slot is ever seen half rewritten (the writer holds `LOCK_EX` while it zeroes
//! the length, rewrites the payload and sets the length again).
//!
//! Plain positioned reads, not a mapping: a file truncated by someone who does not
//! take the lock would make a mapping raise SIGBUS and kill the exporter, where a read
//! just comes back short (counted as `truncated`). The lock is std's `File::lock_shared`
//! (`flock(LOCK_SH)` on Linux), so no unsafe code. Under the lock only the header and
//! the few hundred bytes of each payload are copied; decoding happens after.

use super::reasons::Reason;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// `b"SLNS"`.
pub const MAGIC: &[u8; 4] = b"SLNS";
/// The layout version this build reads (`VERSION = 2`).
pub const VERSION: u16 = 2;
/// `struct "<4sHHI"`: magic, version, dp_size, slot_size.
pub const HEADER_BYTES: u64 = 12;
/// Bytes read per slot in one go: the length and a typical payload (~350 bytes).
const FIRST_READ: usize = 1024;
/// Slot sizes beyond this are refused rather than trusted (SGLang's is 16 KiB).
const MAX_SLOT_SIZE: u32 = 1 << 20;

/// What one slot held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Length 0: no snapshot yet.
    Empty,
    /// The payload bytes.
    Payload(Vec<u8>),
    /// A length past the slot's end.
    TooLong(u32),
}

/// A whole file, read under one shared lock.
#[derive(Debug)]
pub struct FileRead {
    /// (device, inode): a different pair at the same path is a replaced file.
    pub ident: (u64, u64),
    /// `dp_size` of the header.
    pub dp_size: u16,
    /// Slot r's content.
    pub slots: Vec<Slot>,
    /// How long the shared lock was held.
    pub lock_held: Duration,
}

/// A file that could not be read: why, and the error text.
#[derive(Debug)]
pub struct FileError(pub Reason, pub String);

fn io_reason(e: &std::io::Error) -> Reason {
    match e.kind() {
        std::io::ErrorKind::NotFound => Reason::Missing,
        std::io::ErrorKind::PermissionDenied => Reason::Permission,
        std::io::ErrorKind::UnexpectedEof => Reason::Truncated,
        _ => Reason::Io,
    }
}

fn fail<T>(reason: Reason, msg: impl Into<String>) -> Result<T, FileError> {
    Err(FileError(reason, msg.into()))
}

/// Reads the file at `path`: header and every slot under a shared lock.
pub fn read(path: &Path) -> Result<FileRead, FileError> {
    let file = File::open(path).map_err(|e| FileError(io_reason(&e), e.to_string()))?;
    file.lock_shared()
        .map_err(|e| FileError(Reason::Io, format!("flock: {e}")))?;
    let locked = Instant::now();
    let result = read_locked(&file);
    let lock_held = locked.elapsed();
    // Closing the descriptor releases the lock too; unlocking first says so.
    let _ = file.unlock();
    result.map(|(ident, dp_size, slots)| FileRead {
        ident,
        dp_size,
        slots,
        lock_held,
    })
}

type Locked = ((u64, u64), u16, Vec<Slot>);

fn read_locked(file: &File) -> Result<Locked, FileError> {
    let meta = file
        .metadata()
        .map_err(|e| FileError(io_reason(&e), e.to_string()))?;
    let ident = (meta.dev(), meta.ino());
    let size = meta.len();
    if size < HEADER_BYTES {
        return fail(Reason::TooSmall, format!("{size} bytes, no header"));
    }
    let mut header = [0u8; HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| FileError(io_reason(&e), e.to_string()))?;
    if &header[0..4] != MAGIC {
        return fail(Reason::Magic, format!("magic {:?}", &header[0..4]));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return fail(
            Reason::Version,
            format!("layout version {version}, {VERSION} expected"),
        );
    }
    let dp_size = u16::from_le_bytes([header[6], header[7]]);
    let slot_size = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let needed = HEADER_BYTES + u64::from(dp_size) * u64::from(slot_size);
    if dp_size == 0 || !(4..=MAX_SLOT_SIZE).contains(&slot_size) || size < needed {
        return fail(
            Reason::Size,
            format!("dp_size {dp_size} x slot_size {slot_size} needs {needed} bytes, the file has {size}"),
        );
    }
    let max_payload = slot_size - 4;
    let first = FIRST_READ.min(slot_size as usize);
    let mut buf = vec![0u8; first];
    let mut slots = Vec::with_capacity(usize::from(dp_size));
    for r in 0..u64::from(dp_size) {
        let offset = HEADER_BYTES + r * u64::from(slot_size);
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| FileError(io_reason(&e), format!("slot {r}: {e}")))?;
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            slots.push(Slot::Empty);
        } else if len > max_payload {
            slots.push(Slot::TooLong(len));
        } else {
            let len = len as usize;
            let mut payload = Vec::with_capacity(len);
            let have = len.min(first - 4);
            payload.extend_from_slice(&buf[4..4 + have]);
            if have < len {
                payload.resize(len, 0);
                file.read_exact_at(&mut payload[have..], offset + 4 + have as u64)
                    .map_err(|e| FileError(io_reason(&e), format!("slot {r}: {e}")))?;
            }
            slots.push(Slot::Payload(payload));
        }
    }
    Ok((ident, dp_size, slots))
}
