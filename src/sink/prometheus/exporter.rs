//! The exporter's own health: build info, tracked ranks, refusals, stream clients,
//! and the standard `process_*` metrics read from /proc.

use super::text::{Family, Writer};
use crate::sink::serving::HttpStats;
use crate::state::Registry;
use std::sync::atomic::Ordering::Relaxed;

/// Build information.
pub const BUILD_INFO: Family = Family::gauge(
    "fpm_exporter_build_info",
    "Always 1; the version label carries the exporter's version.",
);
/// Ranks tracked.
pub const RANKS_TRACKED: Family = Family::gauge(
    "fpm_exporter_ranks_tracked",
    "Ranks currently tracked (not yet expired).",
);
/// Rank cap.
pub const RANKS_LIMIT: Family = Family::gauge(
    "fpm_exporter_ranks_limit",
    "Most ranks the exporter tracks at once (--max-ranks).",
);
/// Refused frames.
pub const REFUSED: Family = Family::counter(
    "fpm_exporter_refused_frames_total",
    "Frames refused because the rank limit was reached (a publisher cycling through identities).",
);
/// Stream clients.
pub const STREAM_CLIENTS: Family = Family::gauge(
    "fpm_exporter_stream_clients",
    "Clients connected to /v1/stream.",
);
/// Scrapes turned away.
pub const SCRAPES_REJECTED: Family = Family::counter(
    "fpm_exporter_scrapes_rejected_total",
    "Scrapes of /metrics answered 503 because --max-scrapes renders were already running.",
);
/// Write timeouts.
pub const WRITE_TIMEOUTS: Family = Family::counter(
    "fpm_exporter_http_write_timeouts_total",
    "HTTP connections dropped because a response write made no progress for --http-write-timeout.",
);
/// Skipped stream snapshots.
pub const SNAPSHOTS_SKIPPED: Family = Family::counter(
    "fpm_exporter_stream_snapshots_skipped_total",
    "Snapshot events of /v1/stream?interval= not sent because the snapshot budget was busy.",
);
/// Process CPU.
pub const CPU: Family = Family::counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent by the exporter, in seconds.",
);
/// Process RSS.
pub const RSS: Family = Family::gauge(
    "process_resident_memory_bytes",
    "Resident memory of the exporter, in bytes.",
);
/// Process start.
pub const START: Family = Family::gauge(
    "process_start_time_seconds",
    "Start time of the exporter since the Unix epoch, in seconds.",
);

/// Every family this collector writes.
pub fn families() -> Vec<Family> {
    vec![
        BUILD_INFO,
        RANKS_TRACKED,
        RANKS_LIMIT,
        REFUSED,
        STREAM_CLIENTS,
        SCRAPES_REJECTED,
        WRITE_TIMEOUTS,
        SNAPSHOTS_SKIPPED,
        CPU,
        RSS,
        START,
    ]
}

/// Writes the exporter's own families.
pub fn write(
    w: &mut Writer,
    registry: &Registry,
    start_unix_secs: f64,
    http: Option<&HttpStats>,
    stream_clients: usize,
) {
    w.family(&BUILD_INFO);
    w.sample(
        &BUILD_INFO,
        "",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    w.family(&RANKS_TRACKED);
    w.sample(&RANKS_TRACKED, "", &[], registry.rank_count() as f64);
    w.family(&RANKS_LIMIT);
    w.sample(&RANKS_LIMIT, "", &[], registry.config.max_ranks as f64);
    w.family(&REFUSED);
    w.sample(
        &REFUSED,
        "",
        &[],
        registry.refused_frames.load(Relaxed) as f64,
    );
    w.family(&STREAM_CLIENTS);
    w.sample(&STREAM_CLIENTS, "", &[], stream_clients as f64);
    let zero = HttpStats::default();
    let http = http.unwrap_or(&zero);
    for (f, v) in [
        (&SCRAPES_REJECTED, &http.scrapes_rejected),
        (&WRITE_TIMEOUTS, &http.write_timeouts),
        (&SNAPSHOTS_SKIPPED, &http.snapshots_skipped),
    ] {
        w.family(f);
        w.sample(f, "", &[], v.load(Relaxed) as f64);
    }
    if let Some((cpu, rss)) = process_usage() {
        w.family(&CPU);
        w.sample(&CPU, "", &[], cpu);
        w.family(&RSS);
        w.sample(&RSS, "", &[], rss);
    }
    w.family(&START);
    w.sample(&START, "", &[], start_unix_secs);
}

/// CPU seconds and resident bytes of this process, from /proc/self/stat (Linux).
pub fn process_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (ticks, page) = proc_units();
    parse_stat(&stat, ticks, page)
}

/// USER_HZ and the page size, from sysconf: /proc counts CPU in clock ticks and RSS in
/// pages, and neither is fixed (pages are 16 or 64 KiB on some arm64 and ppc64 kernels).
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn proc_units() -> (f64, f64) {
    // SAFETY: sysconf reads a configuration value; it takes no pointers.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        if ticks > 0 { ticks as f64 } else { 100.0 },
        if page > 0 { page as f64 } else { 4096.0 },
    )
}

/// (CPU seconds, resident bytes) from the text of a /proc/PID/stat, in the given units.
pub fn parse_stat(stat: &str, ticks_per_sec: f64, page_bytes: f64) -> Option<(f64, f64)> {
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime=14, stime=15, rss=24 in proc(5) numbering; rest starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: f64 = f.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks_per_sec, rss_pages * page_bytes))
}

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_in_the_units_given() {
        let stat =
            "42 (a (weird) name) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 4 0 100 1000000 300 0";
        assert_eq!(parse_stat(stat, 100.0, 4096.0), Some((3.0, 300.0 * 4096.0)));
        assert_eq!(
            parse_stat(stat, 1000.0, 65536.0),
            Some((0.3, 300.0 * 65536.0))
        );
        assert_eq!(parse_stat("7 (x", 100.0, 4096.0), None);
    }

    #[test]
    fn resident_bytes_agree_with_the_kernels_own_kib_figure() {
        let (_, rss) = process_usage().expect("Linux /proc");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        // Read a moment apart, so allow some drift, but not a page-size factor.
        let ratio = rss / (kib * 1024.0);
        assert!(
            (0.8..1.25).contains(&ratio),
            "stat {rss} vs status {kib} KiB"
        );
    }
}
