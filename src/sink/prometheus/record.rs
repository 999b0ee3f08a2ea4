//! The recorder's counters (`--record`): written only while recording.

use super::text::{Family, Writer};
use crate::capture::recorder::RecordStats;
use std::sync::atomic::Ordering::Relaxed;

/// Frames written.
pub const FRAMES: Family = Family::counter(
    "fpm_record_frames_total",
    "Frames written to the --record capture.",
);
/// Bytes written.
pub const BYTES: Family = Family::counter(
    "fpm_record_bytes_total",
    "Bytes written to the --record capture, across rotations.",
);
/// Frames dropped.
pub const DROPPED: Family = Family::counter(
    "fpm_record_dropped_frames_total",
    "Accepted frames not written to the capture because the recorder fell behind or a write failed (ingestion never waits for it).",
);
/// Rotations.
pub const ROTATIONS: Family = Family::counter(
    "fpm_record_rotations_total",
    "Times the capture file reached --record-max-bytes and was rotated.",
);
/// Write errors.
pub const WRITE_ERRORS: Family = Family::counter(
    "fpm_record_write_errors_total",
    "Failed writes or rotations of the capture file.",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![FRAMES, BYTES, DROPPED, ROTATIONS, WRITE_ERRORS]
}

/// Writes the recorder's families.
pub fn write(w: &mut Writer, stats: &RecordStats) {
    for (fam, v) in [
        (&FRAMES, &stats.frames),
        (&BYTES, &stats.bytes),
        (&DROPPED, &stats.dropped),
        (&ROTATIONS, &stats.rotations),
        (&WRITE_ERRORS, &stats.write_errors),
    ] {
        w.family(fam);
        w.sample(fam, "", &[], v.load(Relaxed) as f64);
    }
}
