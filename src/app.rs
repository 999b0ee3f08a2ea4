//! Wiring the stages together: start everything, and stop everything within a second.

use crate::config::Settings;
use crate::http::{self, AppState, HttpConfig};
use crate::source::subscriber::SubscriberConfig;
use crate::state::Registry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often ranks are aged into stale / expired.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// A running exporter.
pub struct Running {
    /// The bound HTTP address.
    pub addr: SocketAddr,
    /// The ranks.
    pub registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    demo_dir: Option<std::path::PathBuf>,
}

/// Starts the demo engine (if any), the subscribers, the sweeper and the HTTP server.
/// Returns once the listener is bound; publishers need not be up.
pub async fn start(settings: Settings) -> std::io::Result<Running> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let registry = Registry::new(settings.state.clone(), settings.engines.clone());
    let mut tasks = Vec::new();
    let mut demo_dir = None;
    if let Some(demo) = &settings.demo {
        tracing::info!(endpoint = %demo.endpoint, ranks = demo.ranks, "starting the simulated engine");
        if let Some(path) = demo.endpoint.strip_prefix("ipc://") {
            demo_dir = std::path::Path::new(path).parent().map(|p| p.to_path_buf());
        }
        tasks.extend(crate::demo::spawn(&demo.endpoint, demo.ranks, &shutdown_rx));
    }
    let sub_config = SubscriberConfig { silence_timeout: settings.state.stale_after, ..Default::default() };
    tasks.extend(crate::source::spawn_all(&registry, &settings.endpoints, &sub_config, &shutdown_rx));
    tasks.push(tokio::spawn(sweeper(registry.clone(), shutdown_rx.clone())));

    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(registry.clone(), &HttpConfig { max_streams: settings.max_streams }, shutdown_rx.clone());
    state.http_up.store(true, Relaxed);
    let app = http::router(state);
    let mut stop = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        // Without TCP_NODELAY, Nagle holds small SSE writes back until the client's
        // delayed ACK: stream events would arrive up to tens of ms late.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, engines = settings.engines.len(), endpoints = settings.endpoints.len(), "fpm-exporter listening");
    Ok(Running { addr, registry, shutdown, server, tasks, demo_dir })
}

async fn sweeper(registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => registry.sweep(&registry.now()),
            _ = shutdown.changed() => return,
        }
    }
}

impl Running {
    /// Stops everything: in-flight HTTP responses finish, streams end, sockets close.
    /// Gives up waiting after `grace`.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let all = async {
            let _ = self.server.await;
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("shutdown grace period elapsed; exiting anyway");
        }
        if let Some(dir) = self.demo_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
