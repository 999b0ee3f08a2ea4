//! glibc allocator settings and calls, all in one place: the process's settings at
//! start, what the engine-metrics scrape asks of the allocator, and the allocator's
//! own figures for the benchmark.

/// The process's glibc settings, set once before the runtime starts its threads (a
/// thread keeps the arena it got); an explicit `MALLOC_ARENA_MAX` or
/// `MALLOC_MMAP_THRESHOLD_` in the environment wins. Measured with fpm-bench `scrape`
/// (1,024 busy ranks, 2 cores, the same settings given as environment variables):
///
/// - a fixed 1 MiB mmap threshold: glibc's default threshold rises to the largest
///   block freed, after which every scrape's multi-MB snapshot and exposition pieces
///   come from, and stay resident in, the heap as free chunks (5.1 KiB per rank of
///   free chunks kept, 2.2 KiB with the fixed threshold): RSS 24.1 -> 21.4 KiB per rank;
/// - at most [`ARENAS`] arenas, where glibc allows 8 per core: a rank's state,
///   allocated by one runtime worker and grown by another, ends up spread over
///   several arenas, each keeping its own free space (`MALLOC_ARENA_MAX=2`: RSS
///   24.2 -> 22.1 KiB per rank, after twenty scrapes 30.7 -> 24.6).
#[allow(unsafe_code)] // libc calls, see SAFETY below
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
                // SAFETY: mallopt only changes an allocator setting; it takes no pointers.
                unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
            }
            if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
                // SAFETY: as above.
                unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
            }
        });
    }
}

/// Blocks from this size up are mapped on their own and unmapped on free.
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// Hands the merge's freed memory back to the OS: a big directory's scrape frees tens
/// of MB of short-lived samples, which glibc would otherwise keep in the arena of
/// whichever blocking-pool thread ran it (the RSS growth fpm-bench's multiproc measures).
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pins glibc's mmap threshold at [`MMAP_THRESHOLD`] for the engine-metrics scrape,
/// also where the process did not start through [`configure`] (an embedding runtime,
/// the tests): by default the threshold rises to the size of the largest block freed
/// (up to 32 MiB), after which each scrape's multi-MB exposition buffer comes from,
/// and stays in, a thread's heap instead of being unmapped on free.
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes an allocator setting; it takes no pointers.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        });
    }
}

/// The arena cap [`configure`] sets.
pub const ARENAS: i32 = 2;

/// What the allocator holds, in bytes, over every arena.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes in allocated chunks (the live heap plus glibc's per-chunk overhead).
    pub in_use: u64,
    /// Bytes in free chunks the allocator keeps (resident where once touched).
    pub free: u64,
}

/// The allocator's figures (`mallinfo2`), for the benchmark's memory lines; `None`
/// off glibc.
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn allocator_stats() -> Option<AllocatorStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
        let m = unsafe { libc::mallinfo2() };
        Some(AllocatorStats {
            in_use: (m.uordblks + m.hblkhd) as u64,
            free: m.fordblks as u64,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}
