//! glibc allocator settings of the whole process, and the allocator's own figures for
//! the benchmark (the multiproc scrape's settings stay in `source::multiproc`).

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
