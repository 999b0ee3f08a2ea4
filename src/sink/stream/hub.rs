//! The stream's fan-out point. The registry broadcasts plain events; the hub relays
//! them to every `/v1/stream` client, each with one render cache shared by all of them
//! (a frame is turned into JSON once, however many clients watch it).
//!
//! The hub holds its subscription to the registry only while at least one client is
//! connected: the registry builds no event at all when nobody subscribes, and an
//! exporter without stream clients must keep that saving.

use crate::state::{Event, Registry};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;

/// What the hub hands its clients.
#[derive(Debug)]
pub enum Relayed {
    /// A registry event with its JSON, rendered by the first client that needs it.
    Event {
        /// The event.
        event: Arc<Event>,
        /// Its JSON form, once rendered.
        json: OnceLock<Bytes>,
    },
    /// The relay itself fell behind the registry and skipped this many events.
    Lagged(u64),
}

/// Relays registry events to stream clients while any exist.
pub struct StreamHub {
    registry: Arc<Registry>,
    tx: broadcast::Sender<Arc<Relayed>>,
    relay: Mutex<Relay>,
}

/// Which relay task is current, and how to stop it.
#[derive(Default)]
struct Relay {
    clients: usize,
    /// Bumped whenever a relay starts or stops, so a relay that was told to stop can
    /// never forward an event after its successor started (no duplicates).
    generation: u64,
    stop: Option<oneshot::Sender<()>>,
}

/// A client's hold on the hub: while it lives, the relay runs.
pub struct ClientHold {
    hub: Arc<StreamHub>,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut relay = self.hub.relay.lock();
        relay.clients -= 1;
        if relay.clients == 0 {
            relay.generation += 1;
            // Dropping the sender ends the relay's wait; it then drops its receiver.
            relay.stop = None;
        }
    }
}

impl StreamHub {
    /// A hub over `registry`, buffering as many events as the registry's ring.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        let (tx, _) = broadcast::channel(registry.config.stream_buffer.max(16));
        Arc::new(StreamHub {
            registry,
            tx,
            relay: Mutex::new(Relay::default()),
        })
    }

    /// The registry the events come from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Connected clients (`fpm_exporter_stream_clients`).
    pub fn clients(&self) -> usize {
        self.relay.lock().clients
    }

    /// Subscribes a client; events flow to it until the returned hold is dropped.
    /// Must be called inside a tokio runtime (the first client starts the relay).
    pub fn subscribe(self: &Arc<Self>) -> (broadcast::Receiver<Arc<Relayed>>, ClientHold) {
        let mut relay = self.relay.lock();
        let rx = self.tx.subscribe();
        relay.clients += 1;
        if relay.clients == 1 {
            relay.generation += 1;
            let (stop_tx, stop_rx) = oneshot::channel();
            relay.stop = Some(stop_tx);
            let upstream = self.registry.subscribe();
            tokio::spawn(self.clone().run(upstream, stop_rx, relay.generation));
        }
        (rx, ClientHold { hub: self.clone() })
    }

    async fn run(
        self: Arc<Self>,
        mut upstream: broadcast::Receiver<Arc<Event>>,
        mut stop: oneshot::Receiver<()>,
        generation: u64,
    ) {
        loop {
            let item = tokio::select! {
                biased;
                _ = &mut stop => return,
                r = upstream.recv() => match r {
                    Ok(event) => Relayed::Event { event, json: OnceLock::new() },
                    Err(RecvError::Lagged(missed)) => Relayed::Lagged(missed),
                    // The registry is gone: the exporter is stopping.
                    Err(RecvError::Closed) => return,
                },
            };
            let relay = self.relay.lock();
            if relay.generation != generation {
                return;
            }
            // No receiver left is fine: the last hold is being dropped right now.
            let _ = self.tx.send(Arc::new(item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sequence::SeqEvent;
    use crate::state::{EngineInfo, EventKind, RankCache, StateConfig};
    use crate::wire::ForwardPassMetrics;
    use std::time::Duration;

    fn registry() -> Arc<Registry> {
        let engine = EngineInfo {
            name: "e".into(),
            labels: vec![],
        };
        Registry::new(StateConfig::default(), vec![engine])
    }

    /// Feeds one frame per sequence number through the registry's ingest path.
    fn ingest(reg: &Registry, cache: &mut RankCache, sequences: std::ops::Range<u64>) {
        let ep: Arc<str> = "tcp://x:1".into();
        for s in sequences {
            let m = ForwardPassMetrics {
                version: 1,
                worker_id: "w".into(),
                ..Default::default()
            };
            let order = if s == 0 {
                SeqEvent::First
            } else {
                SeqEvent::InOrder
            };
            assert!(reg.ingest(cache, 0, &ep, s, order, m, &reg.now()));
        }
    }

    async fn wait_for_upstream(reg: &Registry, n: usize) {
        for _ in 0..400 {
            if reg.subscribers() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "registry subscribers never reached {n}: {}",
            reg.subscribers()
        );
    }

    fn sequence_of(r: &Relayed) -> u64 {
        match r {
            Relayed::Event { event, .. } => match event.kind {
                EventKind::Frame { sequence, .. } => sequence,
                EventKind::State { .. } => panic!("a state event for a fresh rank"),
            },
            Relayed::Lagged(n) => panic!("the relay lagged by {n}"),
        }
    }

    /// The sequence numbers of the next `n` relayed frames.
    async fn next_sequences(rx: &mut broadcast::Receiver<Arc<Relayed>>, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        while got.len() < n {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("relayed in time")
                .expect("open");
            got.push(sequence_of(&r));
        }
        got
    }

    #[tokio::test]
    async fn subscribes_to_the_registry_only_while_clients_exist() {
        let reg = registry();
        let hub = StreamHub::new(reg.clone());
        assert_eq!(reg.subscribers(), 0);
        let (rx1, hold1) = hub.subscribe();
        let (rx2, hold2) = hub.subscribe();
        assert_eq!(hub.clients(), 2);
        wait_for_upstream(&reg, 1).await;
        drop((rx1, hold1));
        assert_eq!(hub.clients(), 1);
        wait_for_upstream(&reg, 1).await;
        drop((rx2, hold2));
        assert_eq!(hub.clients(), 0);
        wait_for_upstream(&reg, 0).await;
        // With no client, ingest builds no event; a later client starts a fresh relay.
        ingest(&reg, &mut RankCache::default(), 0..3);
        let (_rx, _hold) = hub.subscribe();
        wait_for_upstream(&reg, 1).await;
    }

    #[tokio::test]
    async fn relays_each_event_once_to_every_client() {
        let reg = registry();
        let hub = StreamHub::new(reg.clone());
        let (mut a, _ha) = hub.subscribe();
        let (mut b, _hb) = hub.subscribe();
        // A client that comes and goes in between must not restart or double the relay.
        drop(hub.subscribe());
        wait_for_upstream(&reg, 1).await;
        ingest(&reg, &mut RankCache::default(), 0..5);
        for rx in [&mut a, &mut b] {
            assert_eq!(next_sequences(rx, 5).await, [0, 1, 2, 3, 4]);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(rx.try_recv().is_err(), "no duplicate events");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_churning_while_frames_flow_see_each_frame_once_in_order() {
        let reg = registry();
        let hub = StreamHub::new(reg.clone());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Frames flow from another thread the whole time, so an old relay can be in
        // the middle of forwarding while its successor starts.
        let feeder = {
            let (reg, done) = (reg.clone(), done.clone());
            std::thread::spawn(move || {
                let mut cache = RankCache::default();
                let mut s = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) && s < 5_000_000 {
                    ingest(&reg, &mut cache, s..s + 1);
                    s += 1;
                }
            })
        };
        for _ in 0..200 {
            let (mut rx, hold) = hub.subscribe();
            let mut last = None;
            for _ in 0..16 {
                let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .expect("relayed in time");
                match r {
                    // The relay, or this client, fell behind the feeder: what follows
                    // starts a new run.
                    Ok(r) if matches!(*r, Relayed::Lagged(_)) => last = None,
                    Ok(r) => {
                        let s = sequence_of(&r);
                        if let Some(l) = last {
                            assert_eq!(s, l + 1, "a frame twice, or out of order");
                        }
                        last = Some(s);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => last = None,
                    Err(e) => panic!("{e}"),
                }
            }
            drop((rx, hold));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        feeder.join().unwrap();
    }
}
