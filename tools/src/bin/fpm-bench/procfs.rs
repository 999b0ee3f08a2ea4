//! CPU time of a process, from /proc.

/// CPU seconds of a process: the sum of its threads' scheduler run time (ns, from
/// /proc/PID/task/*/schedstat), precise enough for the 0.5%-of-a-core figure where
/// clock ticks are 10 ms; utime + stime in sysconf(CLK_TCK) ticks where schedstat is
/// missing. (Threads that exited drop out of the sum; the consumers here keep theirs.)
pub(crate) fn proc_cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            if let Some(v) = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let (ticks, page) = fpm_exporter::sink::prometheus::exporter::proc_units();
    fpm_exporter::sink::prometheus::exporter::parse_stat(&stat, ticks, page).map_or(0.0, |u| u.0)
}
