//! Remote engine workers' `/metrics`, scraped in the background (`--scrape`).
//!
//! One [`Target`] per distinct metrics URL ([`address`]); a task scrapes all targets
//! every interval, at most `concurrency` at once, each bounded by a timeout and a body
//! size, and parses ([`parse`]) on the blocking pool. Each target keeps its latest and
//! previous [`Scrape`] behind an `Arc`, so readers (`/engine_metrics`, the engine
//! views) copy two pointers and never wait for a worker.

pub mod address;
pub mod fetch;
mod lexical;
pub mod parse;

use crate::wire::exposition::{Rendered, Scrape};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default of [`ScrapeSettings::interval`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default of [`ScrapeSettings::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default of [`ScrapeSettings::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default of [`ScrapeSettings::max_body_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;

/// Settings shared by every target.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeSettings {
    /// Time between the starts of two scrape rounds.
    pub interval: Duration,
    /// Longest one scrape (connect, headers, body) may take.
    pub timeout: Duration,
    /// Most scrapes in flight at once.
    pub concurrency: usize,
    /// Largest body read; a larger one fails the scrape (`body_limit`).
    pub max_body_bytes: u64,
}

impl Default for ScrapeSettings {
    fn default() -> Self {
        ScrapeSettings {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_body_bytes: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a scrape failed or samples were left out (`fpm_engine_scrape_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapeError {
    /// Connection refused, reset, DNS or TLS failure.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// An HTTP status other than 200.
    HttpStatus,
    /// The body was longer than `--scrape-max-body-bytes`.
    BodyLimit,
    /// The body is not valid text 0.0.4 / OpenMetrics (or not UTF-8).
    Parse,
    /// Samples dropped because an earlier one had the same name and labels.
    DuplicateSample,
    /// A family left out of the fan-in: another source's family of its name has
    /// another type (counted per family per exposition).
    FamilyClash,
}

impl ScrapeError {
    /// Every reason, in label order.
    pub const ALL: [ScrapeError; 7] = [
        ScrapeError::Connect,
        ScrapeError::Timeout,
        ScrapeError::HttpStatus,
        ScrapeError::BodyLimit,
        ScrapeError::Parse,
        ScrapeError::DuplicateSample,
        ScrapeError::FamilyClash,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScrapeError::Connect => "connect",
            ScrapeError::Timeout => "timeout",
            ScrapeError::HttpStatus => "http_status",
            ScrapeError::BodyLimit => "body_limit",
            ScrapeError::Parse => "parse",
            ScrapeError::DuplicateSample => "duplicate_sample",
            ScrapeError::FamilyClash => "family_clash",
        }
    }
}

/// A successful scrape with its samples' `name{labels}` rendered for the fan-in.
#[derive(Debug)]
pub struct Kept {
    /// The scrape.
    pub scrape: Arc<Scrape>,
    /// Per family, per sample: `name{engine labels, worker_addr, own labels}`.
    pub rendered: Arc<Vec<Rendered>>,
}

/// A target's state after its latest scrape.
#[derive(Debug, Default, Clone)]
pub struct Health {
    /// Whether the latest scrape succeeded.
    pub up: bool,
    /// How long the latest scrape took (fetch and parse), in seconds.
    pub duration_seconds: f64,
    /// Samples kept by the latest scrape (0 when it failed).
    pub samples: u64,
    /// When the latest scrape ended (None before the first).
    pub last_scrape: Option<SystemTime>,
    /// Why the latest scrape failed, for humans.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct TargetState {
    latest: Option<Kept>,
    previous: Option<Arc<Scrape>>,
    health: Health,
}

/// One distinct metrics URL of one engine.
#[derive(Debug)]
pub struct Target {
    /// The engine's name (`engine` label).
    pub engine: String,
    /// The engine's index in the configuration.
    pub engine_index: usize,
    /// The engine's configured labels.
    pub engine_labels: Vec<(String, String)>,
    /// The normalized metrics URL; also the `worker_addr` label.
    pub worker_addr: String,
    /// Every configured address that led to this URL, in configuration order.
    pub addresses: Vec<String>,
    url: reqwest::Url,
    state: Mutex<TargetState>,
    errors: [AtomicU64; ScrapeError::ALL.len()],
}

impl Target {
    /// The labels the exporter puts on this target's samples, in order.
    pub fn own_labels(&self) -> Vec<(&str, &str)> {
        let mut l = vec![("engine", self.engine.as_str())];
        l.extend(
            self.engine_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        l.push(("worker_addr", self.worker_addr.as_str()));
        l
    }

    /// Counts `n` of `reason`.
    pub fn count(&self, reason: ScrapeError, n: u64) {
        self.errors[reason as usize].fetch_add(n, Relaxed);
    }

    /// How many of `reason` so far.
    pub fn errors(&self, reason: ScrapeError) -> u64 {
        self.errors[reason as usize].load(Relaxed)
    }

    /// The latest successful scrape, if the latest scrape succeeded.
    pub fn latest(&self) -> Option<(Arc<Scrape>, Arc<Vec<Rendered>>)> {
        let s = self.state.lock();
        s.latest
            .as_ref()
            .map(|k| (k.scrape.clone(), k.rendered.clone()))
    }

    /// The state after the latest scrape.
    pub fn health(&self) -> Health {
        self.state.lock().health.clone()
    }

    /// Records a success: the latest scrape becomes the previous.
    fn succeeded(&self, kept: Kept, duration: Duration, duplicates: u64) {
        let samples = kept
            .scrape
            .families
            .iter()
            .map(|f| f.samples.len() as u64)
            .sum();
        self.count(ScrapeError::DuplicateSample, duplicates);
        let mut s = self.state.lock();
        s.previous = s.latest.take().map(|k| k.scrape);
        s.health = Health {
            up: true,
            duration_seconds: duration.as_secs_f64(),
            samples,
            last_scrape: Some(kept.scrape.at),
            last_error: None,
        };
        s.latest = Some(kept);
    }

    /// Records a failure: the worker's series leave the fan-in at once, and rates
    /// need two fresh scrapes again.
    fn failed(&self, reason: ScrapeError, message: String, duration: Duration) {
        self.count(reason, 1);
        let mut s = self.state.lock();
        if s.health.up || s.health.last_scrape.is_none() {
            tracing::warn!(engine = %self.engine, worker_addr = %self.worker_addr, reason = reason.as_str(), error = %message, "engine worker scrape failed");
        }
        s.latest = None;
        s.previous = None;
        s.health = Health {
            up: false,
            duration_seconds: duration.as_secs_f64(),
            samples: 0,
            last_scrape: Some(SystemTime::now()),
            last_error: Some(message),
        };
    }
}

/// What a reader gets of one worker: who it is, its two latest scrapes, its health.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// The engine's name.
    pub engine: String,
    /// The engine's index in the configuration (as in `Registry::engines`).
    pub engine_index: usize,
    /// The `worker_addr` label (normalized metrics URL).
    pub worker_addr: String,
    /// Every configured address that led to this URL, as written, in configuration
    /// order (the dp ranks `grpc://h:p@0`, `@1`, ... of one worker, as a gateway lists them).
    pub addresses: Vec<String>,
    /// The latest scrape, None when it failed or none has completed.
    pub latest: Option<Arc<Scrape>>,
    /// The scrape before it, None unless the two latest scrapes both succeeded.
    pub previous: Option<Arc<Scrape>>,
    /// Health after the latest scrape.
    pub health: Health,
}

/// Every remote target, and the client that scrapes them.
#[derive(Debug)]
pub struct Workers {
    /// The targets, in configuration order.
    pub targets: Vec<Arc<Target>>,
    /// Shared settings.
    pub settings: ScrapeSettings,
    /// Whether `/metrics` also carries the workers' families (`--merge-engine-metrics`).
    pub merge_into_metrics: bool,
}

/// One configured scrape address of one engine.
#[derive(Debug, Clone)]
pub struct ScrapeSpec {
    /// Index of the engine in the configuration.
    pub engine: usize,
    /// The address as written.
    pub address: String,
}

impl Workers {
    /// Targets for `specs`, addresses of one URL merged into one target. An address
    /// given for two engines is an error: one worker cannot be labelled twice.
    pub fn new(
        specs: &[ScrapeSpec],
        engines: &[crate::state::EngineInfo],
        settings: ScrapeSettings,
    ) -> Result<Workers, String> {
        let mut targets: Vec<Target> = Vec::new();
        for s in specs {
            let url = address::metrics_url(&s.address)?;
            let addr = url.to_string();
            if let Some(t) = targets.iter_mut().find(|t| t.worker_addr == addr) {
                if t.engine_index != s.engine {
                    return Err(format!(
                        "scrape address {:?} ({addr}) is given for engines {:?} and {:?}",
                        s.address, t.engine, engines[s.engine].name
                    ));
                }
                t.addresses.push(s.address.clone());
                continue;
            }
            let e = &engines[s.engine];
            targets.push(Target {
                engine: e.name.clone(),
                engine_index: s.engine,
                engine_labels: e.labels.clone(),
                worker_addr: addr,
                addresses: vec![s.address.clone()],
                url,
                state: Mutex::default(),
                errors: Default::default(),
            });
        }
        Ok(Workers {
            targets: targets.into_iter().map(Arc::new).collect(),
            settings,
            merge_into_metrics: false,
        })
    }

    /// Every worker's latest two scrapes and health: the integrator's read path.
    pub fn snapshot(&self) -> Vec<WorkerView> {
        self.targets
            .iter()
            .map(|t| {
                let s = t.state.lock();
                WorkerView {
                    engine: t.engine.clone(),
                    engine_index: t.engine_index,
                    worker_addr: t.worker_addr.clone(),
                    addresses: t.addresses.clone(),
                    latest: s.latest.as_ref().map(|k| k.scrape.clone()),
                    previous: s.previous.clone(),
                    health: s.health.clone(),
                }
            })
            .collect()
    }

    /// Scrapes every target once, at most `concurrency` at once; returns when all are
    /// done (each bounded by the timeout).
    pub async fn scrape_round(&self, client: &reqwest::Client) {
        use futures::StreamExt;
        futures::stream::iter(self.targets.iter())
            .for_each_concurrent(self.settings.concurrency, |t| {
                fetch::scrape_one(client, t, &self.settings)
            })
            .await;
    }

    /// Scrapes every interval until `shutdown` turns true.
    pub fn spawn(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let client = match fetch::client(&self.settings) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the scrape client; remote engine workers are not scraped");
                    return;
                }
            };
            let mut tick = tokio::time::interval(self.settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                tokio::select! {
                    _ = self.scrape_round(&client) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }
}
