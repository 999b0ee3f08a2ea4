//! The ring of per-sub-window partials that the statistics windows
//! ([`super::window::WindowRing`]) and the performance model ([`super::model::ModelRing`])
//! are both built on, laid out by [`super::quantiles::layout`].
//!
//! Slot `tag % K` holds sub-window `tag` (second / S since the registry's epoch, plus
//! one; 0 = never used). The slots are allocated on the first sample, so an idle or
//! heartbeat-only rank pays nothing for them.

use super::quantiles::layout;

/// K partials of S seconds each, answering a window of W seconds.
#[derive(Debug, Clone)]
pub struct SubWindows<S> {
    sub_secs: u64,
    subs: u64,
    /// (tag, partial) per slot once the first sample arrived, empty before.
    slots: Vec<(u64, S)>,
}

impl<S: Default + Clone> SubWindows<S> {
    /// A ring for a window of `window_secs` seconds (nothing allocated yet).
    pub fn new(window_secs: u64) -> Self {
        let (sub_secs, subs) = layout(window_secs.max(1));
        SubWindows {
            sub_secs,
            subs,
            slots: Vec::new(),
        }
    }

    /// The partial of the sub-window holding second `now_sec`, emptied first if its
    /// slot held an older sub-window; `None` for a sample older than the window behind
    /// data already recorded: it is in no window any more, and taking the slot would
    /// wipe that newer sub-window.
    #[inline]
    pub fn at(&mut self, now_sec: u64) -> Option<&mut S> {
        let tag = now_sec / self.sub_secs + 1;
        if self.slots.is_empty() {
            self.slots = vec![(0, S::default()); self.subs as usize];
        }
        let slot = &mut self.slots[(tag % self.subs) as usize];
        if slot.0 > tag {
            return None;
        }
        if slot.0 != tag {
            *slot = (tag, S::default());
        }
        Some(&mut slot.1)
    }

    /// The partials of the window ending at second `now_sec`, in slot order.
    pub fn window(&self, now_sec: u64) -> impl Iterator<Item = &S> {
        let newest = now_sec / self.sub_secs + 1;
        let lowest = newest.saturating_sub(self.subs - 1);
        self.slots
            .iter()
            .filter(move |(tag, _)| (lowest..=newest).contains(tag))
            .map(|(_, partial)| partial)
    }

    /// Heap bytes the slots hold (for the memory budget's tests).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<(u64, S)>()
    }
}
