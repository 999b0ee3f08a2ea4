//! The engine table: the configured engines, plus engines a source discovers while
//! running (each NATS subject `namespace.component.endpoint` is one).
//!
//! Readers index it on every frame and every scrape, so it must not take a lock: the
//! slots are allocated once and filled in order, each set once, and `len` is published
//! after its slot is filled. Only adding an engine takes a mutex.

use super::EngineInfo;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Engines a source may add at run time beyond the configured ones, unless the
/// configuration asks for more ([`super::StateConfig::dynamic_engines`]).
pub const DYNAMIC_ENGINES: usize = 1024;

/// Append-only table of engines, indexed by [`super::rank::RankKey::engine`].
pub struct Engines {
    slots: Box<[OnceLock<EngineInfo>]>,
    len: AtomicUsize,
    grow: Mutex<()>,
}

impl Engines {
    /// The configured engines, with room for [`DYNAMIC_ENGINES`] more.
    pub fn new(configured: Vec<EngineInfo>) -> Self {
        Self::with_room(configured, DYNAMIC_ENGINES)
    }

    /// The configured engines, with room for `dynamic` more.
    pub fn with_room(configured: Vec<EngineInfo>, dynamic: usize) -> Self {
        let n = configured.len();
        let slots: Box<[OnceLock<EngineInfo>]> =
            (0..n + dynamic).map(|_| OnceLock::new()).collect();
        for (slot, info) in slots.iter().zip(configured) {
            let _ = slot.set(info);
        }
        Engines {
            slots,
            len: AtomicUsize::new(n),
            grow: Mutex::new(()),
        }
    }

    /// Engines known now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most engines this table can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The engines known now, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &EngineInfo> + '_ {
        self.slots[..self.len()].iter().filter_map(|s| s.get())
    }

    /// Adds an engine and returns its index; `None` when the table is full.
    pub fn push(&self, info: EngineInfo) -> Option<usize> {
        let _guard = self.grow.lock();
        let i = self.len.load(Ordering::Relaxed);
        let slot = self.slots.get(i)?;
        let _ = slot.set(info);
        self.len.store(i + 1, Ordering::Release);
        Some(i)
    }
}

impl std::ops::Index<usize> for Engines {
    type Output = EngineInfo;

    fn index(&self, i: usize) -> &EngineInfo {
        self.slots[i].get().expect("engine index below len")
    }
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_in_order_and_stops_at_capacity() {
        let e = Engines::new(vec![EngineInfo {
            name: "a".into(),
            labels: vec![],
        }]);
        assert_eq!(e.len(), 1);
        for i in 0..DYNAMIC_ENGINES {
            let idx = e.push(EngineInfo {
                name: format!("d{i}"),
                labels: vec![],
            });
            assert_eq!(idx, Some(i + 1));
        }
        assert_eq!(e.push(EngineInfo::default()), None, "full: refused");
        assert_eq!(e.len(), 1 + DYNAMIC_ENGINES);
        assert_eq!(e[5].name, "d4");
        assert_eq!(e.iter().count(), e.len());
    }
}
