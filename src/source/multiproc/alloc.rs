//! glibc allocator settings for a big directory's scrape, which allocates and frees
//! multi-MB blocks on whichever blocking-pool thread runs it.

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

/// Pins glibc's mmap threshold at 1 MiB: by default it rises to the size of the
/// largest block freed (up to 32 MiB), after which each scrape's multi-MB exposition
/// buffer comes from, and stays in, a thread's heap instead of being unmapped on free.
#[allow(unsafe_code)] // libc call, see SAFETY below
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes an allocator setting; it takes no pointers.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        });
    }
}
