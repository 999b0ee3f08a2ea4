//! Catching up before a read: a source may hold frames it has received but not yet
//! folded in (the receiver reads sockets in rounds, `--receive-delay` apart). Every
//! reader of the state (HTTP, the sweeper before it ages a rank) first asks each such
//! source to fold in what it holds, so no reader ever sees numbers older than its
//! request, however long the delay between rounds. Consumers of the event stream (the
//! NATS relay and KV writer, `/v1/stream`) need no such step: while they exist, rounds
//! are at most a millisecond apart.

use super::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest a read waits for the sources: a stuck source delays no reader longer.
pub const CATCH_UP_LIMIT: Duration = Duration::from_millis(100);

/// A source's answer to "fold in what you hold": resolves once it has, or `None` when
/// the source is gone.
pub type CatchUp = Arc<dyn Fn() -> Option<oneshot::Receiver<()>> + Send + Sync>;

impl Registry {
    /// Registers a source that holds received frames between its rounds.
    pub fn add_intake(&self, catch_up: CatchUp) {
        self.intakes.write().push(catch_up);
    }

    /// Until every source has folded in what it held when asked (at most
    /// [`CATCH_UP_LIMIT`]). Concurrent readers share the sources' next round.
    pub async fn catch_up(&self) {
        let asked: Vec<_> = {
            let intakes = self.intakes.read();
            intakes.iter().filter_map(|f| f()).collect()
        };
        // One deadline for all: the limit bounds the read, not each source.
        let deadline = tokio::time::Instant::now() + CATCH_UP_LIMIT;
        for answer in asked {
            let _ = tokio::time::timeout_at(deadline, answer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EngineInfo, StateConfig};

    #[tokio::test]
    async fn a_read_waits_for_a_source_that_answers_and_not_long_for_one_that_does_not() {
        let reg = Registry::new(
            StateConfig::default(),
            vec![EngineInfo {
                name: "e".into(),
                labels: vec![],
            }],
        );
        // No source: returns at once.
        let t = std::time::Instant::now();
        reg.catch_up().await;
        assert!(t.elapsed() < Duration::from_millis(50));
        // A source that answers after 20 ms is waited for.
        reg.add_intake(Arc::new(|| {
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let _ = tx.send(());
            });
            Some(rx)
        }));
        let t = std::time::Instant::now();
        reg.catch_up().await;
        assert!(t.elapsed() >= Duration::from_millis(20));
        // One that never answers (its sender kept alive) holds the read at most the limit.
        let stuck = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let keep = stuck.clone();
        reg.add_intake(Arc::new(move || {
            let (tx, rx) = oneshot::channel();
            keep.lock().push(tx);
            Some(rx)
        }));
        let t = std::time::Instant::now();
        reg.catch_up().await;
        let took = t.elapsed();
        assert!(
            took >= CATCH_UP_LIMIT && took < CATCH_UP_LIMIT * 3,
            "{took:?}"
        );
        assert_eq!(stuck.lock().len(), 1);
    }
}
