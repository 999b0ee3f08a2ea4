//! Sources: ZMQ subscribers, one task per rank endpoint of every configured engine.

pub mod endpoint;
pub mod multiproc;
pub mod nats;
pub mod scrape;
pub mod sequence;
pub mod subscriber;
pub mod zmtp;

use crate::state::Registry;
use endpoint::EndpointStats;
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

/// The running subscribers: each endpoint's shared counters (read by `/metrics` and
/// `/readyz`) and the tasks.
pub struct Subscribers {
    /// One per configured endpoint, in configuration order.
    pub endpoints: Arc<[Arc<EndpointStats>]>,
    /// The subscriber tasks.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Spawns one subscriber per endpoint. Never waits for a publisher: connecting
/// happens inside each task.
pub fn spawn_all(
    registry: &Arc<Registry>,
    endpoints: &[EndpointSpec],
    config: &SubscriberConfig,
    shutdown: &watch::Receiver<bool>,
) -> Subscribers {
    let stats: Arc<[Arc<EndpointStats>]> = endpoints
        .iter()
        .map(|spec| Arc::new(EndpointStats::new(spec.engine, spec.rank, &spec.address)))
        .collect();
    let tasks = stats
        .iter()
        .map(|s| {
            tokio::spawn(subscriber::run(
                registry.clone(),
                s.clone(),
                config.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    Subscribers {
        endpoints: stats,
        tasks,
    }
}
