//! Sources: ZMQ subscribers, one task per rank endpoint of every configured engine.

pub mod multiproc;
pub mod nats;
pub mod scrape;
pub mod subscriber;
pub mod zmtp;

use crate::state::Registry;
use std::sync::Arc;
use subscriber::SubscriberConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One endpoint to subscribe to.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// Index of its engine in the registry.
    pub engine: usize,
    /// The dp rank it is expected to carry.
    pub rank: u64,
    /// Its ZMQ address.
    pub address: String,
}

/// Spawns one subscriber per endpoint. Never waits for a publisher: connecting
/// happens inside each task.
pub fn spawn_all(
    registry: &Arc<Registry>,
    endpoints: &[EndpointSpec],
    config: &SubscriberConfig,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    endpoints
        .iter()
        .map(|spec| {
            let stats = registry.add_endpoint(spec.engine, spec.rank, &spec.address);
            tokio::spawn(subscriber::run(
                registry.clone(),
                stats,
                config.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}
