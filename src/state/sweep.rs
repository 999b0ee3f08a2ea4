//! Ageing: silent ranks turn stale, long-silent ones expire and leave the map.

use super::rank::{Liveness, RankKey, RankState};
use super::{Now, Registry};
use std::sync::atomic::Ordering::Relaxed;

/// What a sweep at some instant makes of a rank, from its silence alone.
#[derive(PartialEq)]
enum Aging {
    Fresh,
    Stale,
    Expire,
}

impl Registry {
    /// The one rule for how long a silence may last, shared by the sweep and the
    /// question whether one is due.
    fn aging(&self, rank: &RankState, now: &Now) -> Aging {
        let silent = now.instant.saturating_duration_since(rank.last_frame_at);
        if silent >= self.config.expire_after {
            Aging::Expire
        } else if silent >= self.config.stale_after {
            Aging::Stale
        } else {
            Aging::Fresh
        }
    }

    /// Ages every rank: marks silent ones stale and removes expired ones.
    pub fn sweep(&self, now: &Now) {
        let expired = self.mark_stale(now);
        if !expired.is_empty() {
            self.remove_expired(expired, now);
        }
    }

    /// A sweep that first, if some rank is about to age, has the sources fold in what
    /// they hold: a live rank whose frames wait in its socket is never marked stale.
    pub async fn age(&self) {
        if self.aging_due(&self.now()) {
            self.catch_up().await;
        }
        self.sweep(&self.now());
    }

    /// Whether a sweep now would mark a rank stale or expire one.
    pub fn aging_due(&self, now: &Now) -> bool {
        let map = self.ranks.read();
        map.values().any(|handle| {
            let rank = handle.lock();
            match self.aging(&rank, now) {
                Aging::Expire => true,
                Aging::Stale => rank.liveness != Liveness::Stale,
                Aging::Fresh => false,
            }
        })
    }

    /// Under the read lock: marks silent ranks stale, returns those silent long enough
    /// to expire.
    pub(super) fn mark_stale(&self, now: &Now) -> Vec<RankKey> {
        let mut expired = Vec::new();
        let map = self.ranks.read();
        for (key, handle) in map.iter() {
            let mut rank = handle.lock();
            match self.aging(&rank, now) {
                Aging::Expire => expired.push(key.clone()),
                Aging::Stale => {
                    if let Some(t) = rank.transition(Liveness::Stale) {
                        drop(rank);
                        self.log_transition(key, t, now);
                    }
                }
                Aging::Fresh => {}
            }
        }
        expired
    }

    /// Under the write lock: removes the candidates that are still silent. A frame may
    /// have arrived since [`Self::mark_stale`] looked; that rank lives on.
    pub(super) fn remove_expired(&self, candidates: Vec<RankKey>, now: &Now) {
        let mut map = self.ranks.write();
        for key in candidates {
            let Some(handle) = map.get(&key) else {
                continue;
            };
            let mut rank = handle.lock();
            if self.aging(&rank, now) != Aging::Expire {
                continue;
            }
            rank.removed = true;
            let from = rank.liveness;
            let retired = &self.retired[key.engine];
            retired
                .iterations
                .fetch_add(rank.counters.iterations, Relaxed);
            retired
                .wall_time_ns
                .fetch_add(rank.counters.wall_time_ns, Relaxed);
            drop(rank);
            map.remove(&key);
            self.expired[key.engine].fetch_add(1, Relaxed);
            self.log_transition(&key, (from, Liveness::Expired), now);
        }
    }
}
