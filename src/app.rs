//! Wiring the stages together: start everything, and stop everything within a second.

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::source::subscriber::SubscriberConfig;
use crate::state::Registry;
use std::net::SocketAddr;
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
    /// The bound address of the separate /metrics listener, if configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The ranks.
    pub registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    demo_dir: Option<std::path::PathBuf>,
    record_writer: Option<std::thread::JoinHandle<()>>,
}

/// The tokio runtime the exporter runs on (`fpm-exporter` and the benchmark's `serve`).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // Before the runtime's threads exist: each would otherwise pick its own arena.
    crate::alloc::configure();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
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
        tasks.extend(crate::publisher::demo::spawn(
            &demo.endpoint,
            demo.ranks,
            crate::publisher::demo::Skew {
                heavy: demo.heavy,
                slow: demo.slow,
            },
            &shutdown_rx,
        ));
    }
    // The recorder subscribes to the event ring before any frame can arrive.
    let (mut record_writer, mut record_stats) = (None, None);
    if let Some(rec) = &settings.record {
        let r = crate::capture::recorder::start(&registry, rec.clone(), shutdown_rx.clone())?;
        record_stats = Some(r.stats.clone());
        tracing::info!(file = %rec.path.display(), max_bytes = rec.max_bytes, keep = rec.keep, "recording every accepted frame");
        tasks.push(r.task);
        record_writer = Some(r.writer);
    }
    // The relay subscribes to the event ring before any frame can arrive, too.
    let mut nats_stats = None;
    if let Some(nats) = &settings.nats {
        let stats = Arc::new(crate::source::nats::NatsStats::default());
        stats.hide_relayed.store(
            nats.relayed_series == crate::source::nats::config::RelayedSeries::Edge,
            std::sync::atomic::Ordering::Relaxed,
        );
        nats_stats = Some(stats.clone());
        let relay = crate::sink::nats::Publisher::new(&registry, nats);
        let own_ids = Arc::new(relay.ids.iter().copied().collect());
        tasks.extend(
            relay
                .spawn(
                    registry.clone(),
                    stats.clone(),
                    nats.clone(),
                    shutdown_rx.clone(),
                )
                .await?,
        );
        tasks.push(tokio::spawn(crate::source::nats::ingest::run(
            registry.clone(),
            stats,
            nats.clone(),
            own_ids,
            shutdown_rx.clone(),
        )));
    }
    let sub_config = SubscriberConfig {
        silence_timeout: settings.reconnect_after,
        ..Default::default()
    };
    let subscribers = crate::source::spawn_all(
        &registry,
        &settings.endpoints,
        &sub_config,
        settings.receive_delay,
        &shutdown_rx,
    )?;
    tasks.extend(subscribers.tasks);
    tasks.push(tokio::spawn(sweeper(registry.clone(), shutdown_rx.clone())));

    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let mut state = AppState::new(registry.clone(), &settings.http, shutdown_rx.clone());
    state.endpoints = subscribers.endpoints;
    state.engine_metrics = engine_metrics(&settings);
    state.recorder = record_stats;
    if !settings.load_snapshots.is_empty() {
        let names: Vec<String> = settings.engines.iter().map(|e| e.name.clone()).collect();
        for s in &settings.load_snapshots {
            tracing::info!(engine = %names[s.engine], pattern = %s.pattern, "serving the engine's load snapshots on /v1/loads");
        }
        state.load_snapshots = Some(Arc::new(crate::source::load_snapshot::LoadSnapshots::new(
            &settings.load_snapshots,
            &names,
            settings.state.stale_after,
            settings.state.expire_after,
        )));
        state.load_meta = Arc::new(settings.load_meta.clone());
    }
    state.nats = nats_stats;
    if !settings.scrapes.is_empty() {
        let mut w = crate::source::scrape::Workers::new(
            &settings.scrapes,
            &settings.engines,
            settings.scrape,
        )
        .map_err(std::io::Error::other)?;
        w.merge_into_metrics = settings.merge_engine_metrics;
        let w = Arc::new(w);
        tracing::info!(
            targets = w.targets.len(),
            "scraping remote engine workers into /engine_metrics"
        );
        tasks.push(w.clone().spawn(shutdown_rx.clone()));
        state.workers = Some(w);
    }
    // `/readyz` reports HTTP up once every listener is in its accept loop.
    state
        .listening
        .expect(1 + usize::from(metrics_listener.is_some()));
    let mut servers = Vec::new();
    let main_routes = match metrics_listener {
        Some(l) => {
            let app = http::router_for(state.clone(), http::Routes::Metrics);
            let state = state.clone();
            servers.push(tokio::spawn(async move {
                http::serve::serve(l, app, &state).await
            }));
            http::Routes::Api
        }
        None => http::Routes::All,
    };
    let app = http::router_for(state.clone(), main_routes);
    servers.push(tokio::spawn(async move {
        http::serve::serve(listener, app, &state).await
    }));
    tracing::info!(%addr, ?metrics_addr, engines = settings.engines.len(), endpoints = settings.endpoints.len(), "fpm-exporter listening");
    Ok(Running {
        addr,
        metrics_addr,
        registry,
        shutdown,
        servers,
        tasks,
        demo_dir,
        record_writer,
    })
}

/// The engines' multiprocess directories, if any engine has one.
fn engine_metrics(settings: &Settings) -> Option<Arc<crate::source::multiproc::EngineMetrics>> {
    use crate::source::multiproc::{EngineMetrics, MultiprocDir};
    if settings.multiproc_dirs.is_empty() {
        return None;
    }
    let dirs = settings
        .multiproc_dirs
        .iter()
        .map(|(i, path)| {
            let e = &settings.engines[*i];
            tracing::info!(engine = %e.name, dir = %path.display(), "serving the engine's multiprocess metrics on /engine_metrics");
            MultiprocDir::new(&e.name, &e.labels, path.clone(), settings.multiproc)
        })
        .collect();
    Some(Arc::new(EngineMetrics {
        dirs,
        merge_into_metrics: settings.merge_engine_metrics,
    }))
}

async fn sweeper(registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => registry.age().await,
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
            for s in self.servers {
                let _ = s.await;
            }
            for t in self.tasks {
                let _ = t.await;
            }
            // The recorder's task has handed over its last lines; wait until written.
            if let Some(w) = self.record_writer {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
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
