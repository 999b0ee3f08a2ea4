//! Validation and merging of flags and file into [`Settings`], in named steps. Flags
//! override the file; every error names the flag, or the key and line of the file.

use super::engines::{self, DemoSettings};
use super::file::{self, FileConfig, Source};
use super::{ConfigError, HttpSettings, RecordSettings, RunArgs, DEFAULT_LISTEN};
use crate::source::multiproc::{self, MultiprocSettings};
use crate::source::nats::config::NatsSettings;
use crate::source::nats::NODE_LABEL;
use crate::source::scrape::{self, ScrapeSettings, ScrapeSpec};
use crate::source::EndpointSpec;
use crate::state::{EngineInfo, StateConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the exporter needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Separate address for /metrics, /healthz and /readyz.
    pub metrics_listen: Option<SocketAddr>,
    /// Limits, timeouts and token of the HTTP side.
    pub http: HttpSettings,
    /// State tunables.
    pub state: StateConfig,
    /// Engines, in order.
    pub engines: Vec<EngineInfo>,
    /// One entry per rank endpoint.
    pub endpoints: Vec<EndpointSpec>,
    /// Whether to start the simulated engine.
    pub demo: Option<DemoSettings>,
    /// Where to record accepted frames, if anywhere.
    pub record: Option<RecordSettings>,
    /// NATS ingest and relay, when configured.
    pub nats: Option<NatsSettings>,
    /// Silence after which a connected socket is re-created (not merely stale).
    pub reconnect_after: Duration,
    /// Longest a frame waits in its socket before the receiver reads it.
    pub receive_delay: Duration,
    /// (engine index, its multiprocess directory) for every engine that has one.
    pub multiproc_dirs: Vec<(usize, PathBuf)>,
    /// Limits of the multiprocess reader.
    pub multiproc: MultiprocSettings,
    /// Whether /metrics also carries the engines' multiprocess metrics.
    pub merge_engine_metrics: bool,
    /// Remote worker metrics addresses, per engine (`--scrape`, `scrape = [...]`).
    pub scrapes: Vec<ScrapeSpec>,
    /// Limits of the remote scrapes.
    pub scrape: ScrapeSettings,
    /// Engines whose load snapshots are read (`load_snapshot`, `--load-snapshot`).
    pub load_snapshots: Vec<crate::source::load_snapshot::SnapshotSpec>,
    /// What `/v1/loads` says of each such engine's SGLang.
    pub load_meta: std::collections::BTreeMap<usize, crate::sink::load_snapshot::DocumentMeta>,
}

impl Settings {
    /// Validates flags and the optional file into settings.
    pub fn from_cli(args: &RunArgs) -> Result<Settings, ConfigError> {
        let (file, src) = file::load(args.config.as_deref())?;
        let mut state = state_config(args, &file, &src)?;
        let reconnect_after = reconnect_after(args, &file, &src, state.stale_after)?;
        let receive_delay = receive_delay(args, &file, &src)?;
        let listen = listen(args, &file, &src)?;
        // Most specific wins: an engine's own key, then the flag, then the file's default.
        state.rank_detail.default = args.rank_detail.or(file.rank_detail).unwrap_or_default();
        let e = engines::resolve(args, &file, &src, state.rank_detail.default)?;
        state.rank_detail.engines = e.details;
        let record = RecordSettings::resolve(args)?;
        let http = HttpSettings::resolve(args, file.max_streams)?;
        if args
            .metrics_listen
            .is_some_and(|m| m == listen && m.port() != 0)
        {
            return Err(ConfigError(
                "--metrics-listen must differ from --listen".into(),
            ));
        }
        let mut scopes: Vec<_> = file.engine.iter().map(|e| e.nats.clone()).collect();
        scopes.resize(e.engines.len(), None);
        let nats =
            NatsSettings::resolve(&args.nats, file.nats.as_ref(), &scopes).map_err(ConfigError)?;
        if nats.as_ref().is_some_and(|n| n.ingest_url.is_some()) {
            // Each node relaying an engine is an engine of its own at the central, and
            // each has at least one rank: a table smaller than the rank bound would
            // refuse whole nodes of a fleet the rank bound admits.
            state.dynamic_engines = state.dynamic_engines.max(state.max_ranks);
        }
        let mut engines = e.engines;
        if let Some(node) = nats
            .as_ref()
            .filter(|n| n.publish_url.is_some())
            .map(|n| &n.node)
        {
            // An edge's ranks are told apart from every other node's by this label (its
            // relayed messages carry the same name in their `Fpm-Node` header).
            for info in &mut engines {
                if !info.labels.iter().any(|(k, _)| k == NODE_LABEL) {
                    info.labels.push((NODE_LABEL.to_owned(), node.clone()));
                }
            }
        }
        let multiproc = multiproc_settings(args, &file)?;
        let merge_engine_metrics =
            args.merge_engine_metrics || file.merge_engine_metrics.unwrap_or(false);
        if merge_engine_metrics && e.multiproc_dirs.is_empty() && e.scrapes.is_empty() {
            return Err(ConfigError(
                "--merge-engine-metrics needs an engine with --multiproc-dir or --scrape".into(),
            ));
        }
        let scrape = scrape_settings(args)?;
        // Addresses checked (and one URL under two engines refused) before starting.
        scrape::Workers::new(&e.scrapes, &engines, scrape)
            .map_err(|m| ConfigError(format!("scrape: {m}")))?;
        Ok(Settings {
            listen,
            metrics_listen: args.metrics_listen,
            http,
            state,
            engines,
            endpoints: e.endpoints,
            demo: e.demo,
            record,
            nats,
            reconnect_after,
            receive_delay,
            multiproc_dirs: e.multiproc_dirs,
            multiproc,
            merge_engine_metrics,
            scrapes: e.scrapes,
            scrape,
            load_snapshots: e.load_snapshots,
            load_meta: e.load_meta,
        })
    }
}

/// Windows, staleness, expiry and the rank bound; the flag wins over the file.
fn state_config(
    args: &RunArgs,
    file: &FileConfig,
    src: &Source,
) -> Result<StateConfig, ConfigError> {
    let mut state = StateConfig::default();
    if let Some(w) = &file.windows {
        state.windows = parse_windows(w.get_ref()).map_err(|m| src.at(w.span(), "windows", m))?;
    }
    if let Some(w) = &args.windows {
        let list: Vec<String> = w.split(',').map(str::to_owned).collect();
        state.windows = parse_windows(&list).map_err(|m| ConfigError(format!("--windows: {m}")))?;
    }
    if let Some(v) = &file.stale_after {
        state.stale_after = src.duration(v, "stale_after")?;
    }
    if let Some(v) = &file.expire_after {
        state.expire_after = src.duration(v, "expire_after")?;
    }
    state.stale_after = args.stale_after.unwrap_or(state.stale_after);
    state.expire_after = args.expire_after.unwrap_or(state.expire_after);
    if state.stale_after < Duration::from_millis(500) {
        return Err(ConfigError(
            "stale_after must be at least 500ms (heartbeats come every second)".into(),
        ));
    }
    if state.expire_after <= state.stale_after {
        return Err(ConfigError(
            "expire_after must be longer than stale_after".into(),
        ));
    }
    if let Some(n) = args.max_ranks.or(file.max_ranks) {
        if n == 0 {
            return Err(ConfigError("max_ranks must be at least 1".into()));
        }
        state.max_ranks = n;
    }
    Ok(state)
}

/// Unset, it follows a long `stale_after`; set, it must not undercut it.
fn reconnect_after(
    args: &RunArgs,
    file: &FileConfig,
    src: &Source,
    stale_after: Duration,
) -> Result<Duration, ConfigError> {
    let given = match (args.reconnect_after, &file.reconnect_after) {
        (Some(d), _) => Some(d),
        (None, Some(v)) => Some(src.duration(v, "reconnect_after")?),
        (None, None) => None,
    };
    match given {
        None => Ok(crate::source::subscriber::DEFAULT_RECONNECT_AFTER.max(stale_after)),
        Some(d) if d < stale_after => Err(ConfigError(format!(
            "reconnect_after ({}) must be at least stale_after ({})",
            humantime::format_duration(d),
            humantime::format_duration(stale_after)
        ))),
        Some(d) => Ok(d),
    }
}

/// At most a second: a longer wait would show in every reader's numbers.
fn receive_delay(args: &RunArgs, file: &FileConfig, src: &Source) -> Result<Duration, ConfigError> {
    let d = match (args.receive_delay, &file.receive_delay) {
        (Some(d), _) => d,
        (None, Some(v)) => src.duration(v, "receive_delay")?,
        (None, None) => crate::source::receiver::DEFAULT_RECEIVE_DELAY,
    };
    if d > Duration::from_secs(1) {
        return Err(ConfigError(format!(
            "receive_delay ({}) must be at most 1s",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}

fn listen(args: &RunArgs, file: &FileConfig, src: &Source) -> Result<SocketAddr, ConfigError> {
    match (&args.listen, &file.listen) {
        (Some(a), _) => Ok(*a),
        (None, Some(s)) => s
            .get_ref()
            .parse()
            .map_err(|e| src.at(s.span(), "listen", format!("{:?}: {e}", s.get_ref()))),
        (None, None) => Ok(DEFAULT_LISTEN.parse().expect("valid default")),
    }
}

fn multiproc_settings(args: &RunArgs, file: &FileConfig) -> Result<MultiprocSettings, ConfigError> {
    let out = MultiprocSettings {
        max_bytes: args
            .multiproc_max_bytes
            .or(file.multiproc_max_bytes)
            .unwrap_or(multiproc::DEFAULT_MAX_BYTES),
        pid_check: !args.multiproc_no_pid_check && file.multiproc_pid_check.unwrap_or(true),
    };
    if out.max_bytes < 65_536 {
        return Err(ConfigError(
            "multiproc_max_bytes must be at least 65536".into(),
        ));
    }
    Ok(out)
}

/// Rolling windows in seconds: 1 to 4 of them, whole seconds from 1s to 1h, distinct.
fn parse_windows(list: &[String]) -> Result<Vec<u64>, String> {
    if list.is_empty() || list.len() > 4 {
        return Err("give 1 to 4 windows".into());
    }
    let mut out = Vec::new();
    for w in list {
        let w = w.trim();
        let d = w
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(w))
            .map_err(|_| format!("window {w:?} is not a duration like 10s"))?;
        if d.subsec_nanos() != 0 || d.as_secs() == 0 || d.as_secs() > 3600 {
            return Err(format!("window {w:?} must be whole seconds from 1s to 1h"));
        }
        if out.contains(&d.as_secs()) {
            return Err(format!("window {w:?} is given twice"));
        }
        out.push(d.as_secs());
    }
    Ok(out)
}

/// The remote scrape limits from the flags, checked.
fn scrape_settings(args: &RunArgs) -> Result<ScrapeSettings, ConfigError> {
    use scrape as s;
    let err = |m: &str| ConfigError(m.into());
    let out = s::ScrapeSettings {
        interval: args.scrape_interval.unwrap_or(s::DEFAULT_INTERVAL),
        timeout: args
            .scrape_timeout
            .unwrap_or(s::DEFAULT_TIMEOUT.min(args.scrape_interval.unwrap_or(s::DEFAULT_INTERVAL))),
        concurrency: args.scrape_concurrency.unwrap_or(s::DEFAULT_CONCURRENCY),
        max_body_bytes: args.scrape_max_body_bytes.unwrap_or(s::DEFAULT_MAX_BODY),
    };
    if out.interval < Duration::from_millis(100) {
        return Err(err("--scrape-interval must be at least 100ms"));
    }
    if out.timeout < Duration::from_millis(10) || out.timeout > out.interval {
        return Err(err(
            "--scrape-timeout must be from 10ms to --scrape-interval",
        ));
    }
    if out.concurrency == 0 {
        return Err(err("--scrape-concurrency must be at least 1"));
    }
    if out.max_body_bytes < 1024 {
        return Err(err("--scrape-max-body-bytes must be at least 1024"));
    }
    Ok(out)
}
