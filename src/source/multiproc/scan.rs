//! One scrape's reads of a directory's files, in listing order. Copying the files'
//! `used` bytes out of the page cache is most of a steady scrape's work (17.4 MB for
//! a 64-process SGLang directory), so a directory whose files were all read before
//! is read on two threads, each over half of the bytes; the entries come out in the
//! same order either way, so the merge (and its float sums) is the same.

use super::file::{self, FileName, Layout, Read};
use super::keys::Keys;
use super::Reason;
use std::cell::Cell;
use std::ffi::OsString;
use std::path::PathBuf;

/// Fewest files worth a second thread.
const PARALLEL_FILES: usize = 16;

/// A file to read: its name, path, what its name says, its last layout.
pub(super) struct Job {
    pub(super) name: OsString,
    pub(super) path: PathBuf,
    pub(super) parsed: FileName,
    pub(super) layout: Option<Layout>,
}

/// A job's read: the file's name, path and what it says, the read, where its entries are.
pub(super) struct Outcome {
    pub(super) name: OsString,
    path: PathBuf,
    pub(super) parsed: FileName,
    pub(super) read: Result<Option<Read>, Reason>,
    pub(super) range: std::ops::Range<usize>,
}

/// Reusable buffers of both threads.
#[derive(Default)]
pub(super) struct Scratch {
    bufs: [file::Buffers; 2],
    /// The second thread's entries, appended to the first's after the join.
    second: Vec<(u32, f64, f64)>,
    /// Scrapes read on two threads, and those sent back to one by a new key (tests).
    pub(super) parallel: (u64, u64),
}

/// Reads every job, appending entries to `values`, and spends at most `budget` bytes.
/// Two threads when every file has a layout and the last scrape's cost of each half
/// is at most two thirds of half the budget: each half then gets half the budget, so
/// together they never read more than one thread would be allowed to (a half whose
/// files grew by half since the last scrape skips some as `byte_limit` where one
/// thread might not have). A key neither thread has seen sends the scrape to the
/// one-thread path, the only one that parses keys.
pub(super) fn read_all(
    jobs: Vec<Job>,
    keys: &mut Keys,
    budget: u64,
    scratch: &mut Scratch,
    values: &mut Vec<(u32, f64, f64)>,
) -> Vec<Outcome> {
    let cost = |j: &Job| file::OPEN_COST + j.layout.as_ref().map_or(0, |l| l.identity().2 as u64);
    let total: u64 = jobs.iter().map(cost).sum();
    let mut split = 0;
    let mut first_half = 0;
    while split < jobs.len() && 2 * (first_half + cost(&jobs[split])) <= total {
        first_half += cost(&jobs[split]);
        split += 1;
    }
    let half = budget / 2;
    let fits = |c: u64| c.saturating_mul(3) <= half.saturating_mul(2);
    let parallel = jobs.len() >= PARALLEL_FILES
        && jobs.iter().all(|j| j.layout.is_some())
        && fits(first_half)
        && fits(total - first_half);
    if !parallel {
        return serial(jobs, keys, budget, &mut scratch.bufs[0], values);
    }
    let start = values.len();
    let mut second_jobs = jobs;
    let first_jobs: Vec<Job> = second_jobs.drain(..split).collect();
    let [bufs_a, bufs_b] = &mut scratch.bufs;
    let second_values = &mut scratch.second;
    second_values.clear();
    let shared: &Keys = keys;
    let ((mut out, unknown_a), (out_b, unknown_b)) = std::thread::scope(|s| {
        let b = s.spawn(|| known_only(second_jobs, shared, budget - half, bufs_b, second_values));
        let a = known_only(first_jobs, shared, half, bufs_a, values);
        (a, b.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    if unknown_a || unknown_b {
        scratch.parallel.1 += 1;
        // New keys: read again on one thread, keeping the layouts just read.
        values.truncate(start);
        let jobs = out
            .into_iter()
            .chain(out_b)
            .map(|o| Job {
                path: o.path,
                layout: o.read.ok().flatten().map(|r| r.layout),
                name: o.name,
                parsed: o.parsed,
            })
            .collect();
        return serial(jobs, keys, budget, &mut scratch.bufs[0], values);
    }
    scratch.parallel.0 += 1;
    let offset = values.len();
    values.extend_from_slice(&scratch.second);
    out.extend(out_b.into_iter().map(|mut o| {
        o.range = o.range.start + offset..o.range.end + offset;
        o
    }));
    out
}

/// One thread's reads, parsing new keys.
fn serial(
    jobs: Vec<Job>,
    keys: &mut Keys,
    mut budget: u64,
    bufs: &mut file::Buffers,
    values: &mut Vec<(u32, f64, f64)>,
) -> Vec<Outcome> {
    let mut intern = |raw: &[u8]| keys.intern(raw);
    run(jobs, &mut intern, &mut budget, bufs, values)
}

/// One thread's reads with keys seen before only: (outcomes, whether a key was new).
fn known_only(
    jobs: Vec<Job>,
    keys: &Keys,
    mut budget: u64,
    bufs: &mut file::Buffers,
    values: &mut Vec<(u32, f64, f64)>,
) -> (Vec<Outcome>, bool) {
    let unknown = Cell::new(false);
    let mut lookup = |raw: &[u8]| match keys.lookup(raw) {
        Some(id) => id,
        None => {
            unknown.set(true);
            None
        }
    };
    let out = run(jobs, &mut lookup, &mut budget, bufs, values);
    (out, unknown.get())
}

fn run(
    jobs: Vec<Job>,
    intern: &mut dyn FnMut(&[u8]) -> Option<u32>,
    budget: &mut u64,
    bufs: &mut file::Buffers,
    values: &mut Vec<(u32, f64, f64)>,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let start = values.len();
        let read = file::read(&j.path, j.layout, intern, budget, bufs, values);
        if !matches!(read, Ok(Some(_))) {
            values.truncate(start);
        }
        out.push(Outcome {
            name: j.name,
            path: j.path,
            parsed: j.parsed,
            read,
            range: start..values.len(),
        });
    }
    out
}
