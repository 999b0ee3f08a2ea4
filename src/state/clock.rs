//! The registry's two clocks: monotonic for ageing and windows, wall clock for stamps.

use super::Registry;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Reads the wall clock as Unix nanoseconds; injectable so tests can step it.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system wall clock (0 before 1970, which no real clock reports).
pub fn system_wall_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

/// A point in time on both clocks: monotonic for ageing, wall clock for reporting.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic instant.
    pub instant: Instant,
    /// Whole seconds since the registry's epoch (indexes the window rings).
    pub sec: u64,
    /// Wall-clock Unix nanoseconds, read when the point was taken (so it follows
    /// clock corrections; nothing ages or windows by it).
    pub unix_ns: u64,
}

impl Registry {
    /// The current time on both clocks.
    pub fn now(&self) -> Now {
        let instant = Instant::now();
        Now {
            instant,
            sec: instant.saturating_duration_since(self.epoch).as_secs(),
            unix_ns: (self.wall_clock)(),
        }
    }

    /// `instant` on both clocks (the wall time is the current one, shifted by how far
    /// `instant` is from now).
    pub fn at(&self, instant: Instant) -> Now {
        let now = self.now();
        let unix_ns = if instant >= now.instant {
            now.unix_ns
                .saturating_add((instant - now.instant).as_nanos() as u64)
        } else {
            now.unix_ns
                .saturating_sub((now.instant - instant).as_nanos() as u64)
        };
        Now {
            instant,
            sec: instant.saturating_duration_since(self.epoch).as_secs(),
            unix_ns,
        }
    }
}
