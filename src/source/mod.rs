//! Sources: ZMQ subscribers, one task per rank endpoint of every configured engine.

pub mod endpoint;
pub mod load_snapshot;
pub mod multiproc;
pub mod nats;
pub mod receiver;
pub mod scrape;
pub mod sequence;
pub mod subscriber;
pub mod zmtp;

use crate::state::Registry;
use endpoint::EndpointStats;
use receiver::ReceiveSettings;
use std::sync::Arc;
use subscriber::{EndpointReceiver, SubscriberConfig};
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

/// Starts the receiver thread and one subscriber task per endpoint. Never waits for a
/// publisher: connecting happens inside each task. Fails only if the thread or its
/// poll cannot be created.
pub fn spawn_all(
    registry: &Arc<Registry>,
    endpoints: &[EndpointSpec],
    config: &SubscriberConfig,
    receive_delay: std::time::Duration,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Subscribers> {
    let settings = ReceiveSettings {
        delay: receive_delay,
        silence_timeout: config.silence_timeout,
    };
    let reg = registry.clone();
    // Pushed events (stream clients, the NATS relay, the recorder) want frames soon.
    let receiver: Arc<EndpointReceiver> =
        Arc::new(receiver::Receiver::start(settings, move || {
            reg.subscribers() > 0
        })?);
    // Readers first have the receiver fold in what its sockets hold (state::intake);
    // weak, so the registry does not keep a stopped receiver alive.
    let weak = Arc::downgrade(&receiver);
    registry.add_intake(Arc::new(move || weak.upgrade()?.catch_up()));
    let stats: Arc<[Arc<EndpointStats>]> = endpoints
        .iter()
        .map(|spec| Arc::new(EndpointStats::new(spec.engine, spec.rank, &spec.address)))
        .collect();
    let mut tasks: Vec<JoinHandle<()>> = stats
        .iter()
        .map(|s| {
            tokio::spawn(subscriber::run(
                registry.clone(),
                s.clone(),
                config.clone(),
                receiver.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    // The thread stops with the exporter, closing every connection it holds.
    let mut stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        // Returns at shutdown, or when the sender is gone (the exporter is stopping).
        let _ = stop.wait_for(|&stopping| stopping).await;
        receiver.stop();
    }));
    Ok(Subscribers {
        endpoints: stats,
        tasks,
    })
}
