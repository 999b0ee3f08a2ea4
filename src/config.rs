//! Configuration: command-line flags for one engine, a TOML file for several.
//! Every error names the flag, or the key and line of the file.

use crate::address::{rank_address, RankRange};
use crate::source::EndpointSpec;
use crate::state::{EngineInfo, StateConfig};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Label names the exporter itself uses; engine labels may not reuse them.
pub const RESERVED_LABELS: [&str; 13] = [
    "engine",
    "worker_id",
    "worker_addr",
    "dp_rank",
    "endpoint",
    "window",
    "field",
    "quantile",
    "state",
    "reason",
    "version",
    "regression",
    "term",
];

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "fpm-exporter",
    version,
    about = "Export LLM engines' forward-pass metrics (FPM) to Prometheus, JSON streams and router load views."
)]
pub struct Cli {
    /// What to run; without a subcommand the exporter runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Exporter options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands besides the exporter itself.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run only the simulated engine (publishers, no exporter), e.g. for another consumer.
    Demo {
        /// Base endpoint; rank r publishes on port + r (tcp) or path.r (ipc).
        #[arg(long, default_value = "tcp://127.0.0.1:25380")]
        endpoint: String,
        /// Number of simulated dp ranks.
        #[arg(long, default_value_t = 4)]
        ranks: u64,
        /// Stop after this long (default: run until interrupted).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Publish a capture made with --record again over ZMQ (one PUB per dp_rank in it).
    Replay {
        /// Capture files, played in the order given (a rotated capture: FILE.2 FILE.1 FILE).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Base endpoint: tcp://HOST:PORT (rank r on PORT+r) or ipc:///PATH (rank r on PATH.r).
        #[arg(long, default_value = "tcp://127.0.0.1:20380")]
        endpoint: String,
        /// Playback speed: 1 is the recorded pace, 2 twice as fast, 0 as fast as possible (else 0.001 to 1000000).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Pause between binding and the first frame, so subscribers can connect first.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

/// Options of the exporter.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Base endpoint of one engine: tcp://HOST:PORT (rank r on PORT+r) or ipc:///PATH (rank r on PATH.r).
    #[arg(short, long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Ranks of that engine: N (0..N-1), A-B (inclusive) or A..B.
    #[arg(short, long, value_name = "N|A-B", default_value = "1")]
    pub ranks: String,
    /// Name of that engine (the `engine` label).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub engine: String,
    /// Extra label for that engine, e.g. --label model=llama --label role=decode.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// TOML file declaring several engines (see docs/configuration.md); flags override its settings.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run the built-in simulated engine and subscribe to it (the default when no engine is given).
    #[arg(long)]
    pub demo: bool,
    /// Ranks of the simulated engine.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub demo_ranks: u64,
    /// HTTP listen address.
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Rolling windows, comma-separated whole seconds or durations, e.g. 10s,60s.
    #[arg(long, value_name = "LIST")]
    pub windows: Option<String>,
    /// Silence after which a rank is stale.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stale_after: Option<Duration>,
    /// Silence after which a rank expires and its series disappear.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expire_after: Option<Duration>,
    /// Silence after which a connected socket is presumed half-open and re-created (at least --stale-after) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reconnect_after: Option<Duration>,
    /// Most ranks tracked at once.
    #[arg(long, value_name = "N")]
    pub max_ranks: Option<usize>,
    /// Most concurrent /v1/stream clients.
    #[arg(long, value_name = "N")]
    pub max_streams: Option<usize>,
    /// Record every accepted frame to FILE as JSON lines (Dynamo's recorder format); refuses an existing file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Rotate the capture when it reaches this size in bytes (default 256 MiB).
    #[arg(long, value_name = "BYTES", requires = "record")]
    pub record_max_bytes: Option<u64>,
    /// Rotated capture files to keep: FILE.1 (newest) to FILE.N (default 5).
    #[arg(long, value_name = "N", requires = "record")]
    pub record_keep: Option<u32>,
    /// Serve /metrics (with /healthz, /readyz) on this separate address; --listen then serves only the JSON API.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// File holding a bearer token required on the JSON API (/v1/*); the env FPM_API_TOKEN may give the token itself.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Require the bearer token on /metrics too.
    #[arg(long)]
    pub protect_metrics: bool,
    /// Drop an HTTP connection that sends no complete request headers for this long (also bounds idle keep-alive) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http_idle_timeout: Option<Duration>,
    /// Drop a connection whose response write makes no progress for this long (a client that stopped reading) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http_write_timeout: Option<Duration>,
    /// Most /metrics renders at once; more scrapes get 503 [default: 8].
    #[arg(long, value_name = "N")]
    pub max_scrapes: Option<usize>,
    /// The engine's PROMETHEUS_MULTIPROC_DIR: serve its own metrics on /engine_metrics (the engine of --endpoint, or one of its own).
    #[arg(long, value_name = "DIR")]
    pub multiproc_dir: Option<PathBuf>,
    /// Also append the engines' multiprocess metrics to /metrics.
    #[arg(long)]
    pub merge_engine_metrics: bool,
    /// Most bytes read from one multiprocess directory per scrape [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub multiproc_max_bytes: Option<u64>,
    /// Keep live-mode gauge files of pids absent from /proc (when the exporter cannot see the engine's processes).
    #[arg(long)]
    pub multiproc_no_pid_check: bool,
    /// Per-rank series on /metrics: lean (what dashboards and alerts read) or full (every window statistic and the rank's model); an engine's rank_detail in the TOML file wins for that engine [default: lean].
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub rank_detail: Option<crate::sink::prometheus::detail::RankDetail>,
    /// A worker's metrics address to scrape into /engine_metrics (repeatable; `http(s)://host:port[/path]`, `grpc://host:port[@rank]`, `host:port`).
    #[arg(long = "scrape", value_name = "ADDRESS")]
    pub scrape: Vec<String>,
    /// Time between two scrapes of every worker [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub scrape_interval: Option<Duration>,
    /// Longest one worker scrape may take, at most the interval [default: 3s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub scrape_timeout: Option<Duration>,
    /// Most worker scrapes in flight at once [default: 16].
    #[arg(long, value_name = "N")]
    pub scrape_concurrency: Option<usize>,
    /// Largest worker metrics body read; a longer one fails the scrape [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub scrape_max_body_bytes: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// NATS ingest and relay (Dynamo's event plane).
    #[command(flatten)]
    pub nats: crate::source::nats::config::NatsArgs,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<toml::Spanned<String>>,
    windows: Option<toml::Spanned<Vec<String>>>,
    stale_after: Option<toml::Spanned<String>>,
    expire_after: Option<toml::Spanned<String>>,
    reconnect_after: Option<toml::Spanned<String>>,
    max_ranks: Option<usize>,
    max_streams: Option<usize>,
    nats: Option<crate::source::nats::config::NatsFile>,
    merge_engine_metrics: Option<bool>,
    multiproc_max_bytes: Option<u64>,
    multiproc_pid_check: Option<bool>,
    rank_detail: Option<crate::sink::prometheus::detail::RankDetail>,
    #[serde(default)]
    engine: Vec<FileEngine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEngine {
    name: toml::Spanned<String>,
    endpoint: Option<toml::Spanned<String>>,
    multiproc_dir: Option<PathBuf>,
    #[serde(default)]
    scrape: Vec<String>,
    #[serde(default)]
    ranks: Option<toml::Spanned<RanksValue>>,
    #[serde(default)]
    labels: Option<toml::Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    nats: Option<crate::source::nats::config::EngineScopeFile>,
    rank_detail: Option<crate::sink::prometheus::detail::RankDetail>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RanksValue {
    Count(u64),
    Range(String),
}

/// Everything the exporter needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// State tunables.
    pub state: StateConfig,
    /// Engines, in order.
    pub engines: Vec<EngineInfo>,
    /// One entry per rank endpoint.
    pub endpoints: Vec<EndpointSpec>,
    /// Whether to start the simulated engine.
    pub demo: Option<DemoSettings>,
    /// Most concurrent stream clients.
    pub max_streams: usize,
    /// Where to record accepted frames, if anywhere.
    pub record: Option<crate::capture::recorder::RecordSettings>,
    /// Separate address for /metrics, /healthz and /readyz.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token of the JSON API.
    pub api_token: Option<crate::http::auth::ApiToken>,
    /// Whether /metrics needs the token too.
    pub protect_metrics: bool,
    /// Header-read and idle keep-alive timeout of HTTP connections.
    pub http_idle_timeout: Duration,
    /// NATS ingest and relay, when configured.
    pub nats: Option<crate::source::nats::config::NatsSettings>,
    /// Silence after which a connected socket is re-created (not merely stale).
    pub reconnect_after: Duration,
    /// How long a response write may make no progress.
    pub http_write_timeout: Duration,
    /// Most concurrent `/metrics` renders.
    pub max_scrapes: usize,
    /// (engine index, its multiprocess directory) for every engine that has one.
    pub multiproc_dirs: Vec<(usize, PathBuf)>,
    /// Limits of the multiprocess reader.
    pub multiproc: crate::source::multiproc::MultiprocSettings,
    /// Whether /metrics also carries the engines' multiprocess metrics.
    pub merge_engine_metrics: bool,
    /// Remote worker metrics addresses, per engine (`--scrape`, `scrape = [...]`).
    pub scrapes: Vec<crate::source::scrape::ScrapeSpec>,
    /// Limits of the remote scrapes.
    pub scrape: crate::source::scrape::ScrapeSettings,
}

/// The simulated engine's settings.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Base endpoint.
    pub endpoint: String,
    /// Number of ranks.
    pub ranks: u64,
}

/// The default HTTP address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9380";

/// A configuration error with its location.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn line_of(text: &str, span: std::ops::Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

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

fn check_label(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with("__")
    {
        return Err(format!(
            "label name {name:?} is not a valid Prometheus label name"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "label name {name:?} is used by the exporter itself"
        ));
    }
    Ok(())
}

fn expand(engine: usize, base: &str, ranks: RankRange) -> Result<Vec<EndpointSpec>, String> {
    ranks
        .iter()
        .map(|r| {
            rank_address(base, r)
                .map(|address| EndpointSpec {
                    engine,
                    rank: r,
                    address,
                })
                .map_err(|e| e.0)
        })
        .collect()
}

impl Settings {
    /// Validates flags and the optional file into settings.
    pub fn from_cli(args: &RunArgs) -> Result<Settings, ConfigError> {
        let err = |m: String| ConfigError(m);
        let (file, text, path) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("--config {}: {e}", path.display())))?;
                let file: FileConfig =
                    toml::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
                (file, text, path.display().to_string())
            }
            None => (FileConfig::default(), String::new(), String::new()),
        };
        let at = |span: std::ops::Range<usize>, key: &str, msg: String| {
            err(format!(
                "{path}: line {}: {key}: {msg}",
                line_of(&text, span)
            ))
        };

        let mut state = StateConfig::default();
        if let Some(w) = &file.windows {
            state.windows = parse_windows(w.get_ref()).map_err(|m| at(w.span(), "windows", m))?;
        }
        if let Some(w) = &args.windows {
            let list: Vec<String> = w.split(',').map(str::to_owned).collect();
            state.windows = parse_windows(&list).map_err(|m| err(format!("--windows: {m}")))?;
        }
        for (key, slot, file_val, flag) in [
            (
                "stale_after",
                &mut state.stale_after,
                &file.stale_after,
                args.stale_after,
            ),
            (
                "expire_after",
                &mut state.expire_after,
                &file.expire_after,
                args.expire_after,
            ),
        ] {
            if let Some(v) = file_val {
                *slot = humantime::parse_duration(v.get_ref()).map_err(|e| {
                    at(
                        v.span(),
                        key,
                        format!("{:?} is not a duration: {e}", v.get_ref()),
                    )
                })?;
            }
            if let Some(d) = flag {
                *slot = d;
            }
        }
        if state.stale_after < Duration::from_millis(500) {
            return Err(err(
                "stale_after must be at least 500ms (heartbeats come every second)".into(),
            ));
        }
        if state.expire_after <= state.stale_after {
            return Err(err("expire_after must be longer than stale_after".into()));
        }
        let reconnect_after = match (args.reconnect_after, &file.reconnect_after) {
            (Some(d), _) => Some(d),
            (None, Some(v)) => Some(humantime::parse_duration(v.get_ref()).map_err(|e| {
                at(
                    v.span(),
                    "reconnect_after",
                    format!("{:?} is not a duration: {e}", v.get_ref()),
                )
            })?),
            (None, None) => None,
        };
        // Unset, it follows a long --stale-after; set, it must not undercut it.
        let reconnect_after = match reconnect_after {
            None => crate::source::subscriber::DEFAULT_RECONNECT_AFTER.max(state.stale_after),
            Some(d) if d < state.stale_after => {
                return Err(err(format!(
                    "reconnect_after ({}) must be at least stale_after ({})",
                    humantime::format_duration(d),
                    humantime::format_duration(state.stale_after)
                )))
            }
            Some(d) => d,
        };
        if let Some(n) = args.max_ranks.or(file.max_ranks) {
            if n == 0 {
                return Err(err("max_ranks must be at least 1".into()));
            }
            state.max_ranks = n;
        }
        let max_streams = args.max_streams.or(file.max_streams).unwrap_or(256);

        let listen = match (&args.listen, &file.listen) {
            (Some(a), _) => *a,
            (None, Some(s)) => s
                .get_ref()
                .parse()
                .map_err(|e| at(s.span(), "listen", format!("{:?}: {e}", s.get_ref())))?,
            (None, None) => DEFAULT_LISTEN.parse().expect("valid default"),
        };

        let mut engines = Vec::new();
        let mut endpoints = Vec::new();
        let mut multiproc_dirs = Vec::new();
        // Most specific wins: an engine's own key, then the flag, then the file's default.
        state.rank_detail.default = args.rank_detail.or(file.rank_detail).unwrap_or_default();
        let mut details = Vec::new();
        let mut scrapes = Vec::new();
        for e in &file.engine {
            let idx = engines.len();
            let name = e.name.get_ref().trim();
            if name.is_empty() {
                return Err(at(e.name.span(), "engine.name", "must not be empty".into()));
            }
            if engines.iter().any(|x: &EngineInfo| x.name == name) {
                return Err(at(
                    e.name.span(),
                    "engine.name",
                    format!("{name:?} is declared twice"),
                ));
            }
            let ranks = match &e.ranks {
                None => RankRange { start: 0, end: 1 },
                Some(r) => match r.get_ref() {
                    RanksValue::Count(n) => RankRange::parse(&n.to_string()),
                    RanksValue::Range(s) => RankRange::parse(s),
                }
                .map_err(|m| at(r.span(), "engine.ranks", m.0))?,
            };
            let labels = e
                .labels
                .as_ref()
                .map(|l| (l.get_ref().clone(), l.span()))
                .unwrap_or_default();
            for k in labels.0.keys() {
                check_label(k).map_err(|m| at(labels.1.clone(), "engine.labels", m))?;
            }
            match &e.endpoint {
                Some(ep) => endpoints.extend(
                    expand(idx, ep.get_ref(), ranks)
                        .map_err(|m| at(ep.span(), "engine.endpoint", m))?,
                ),
                None if e.multiproc_dir.is_some() || !e.scrape.is_empty() => {}
                None => {
                    return Err(at(
                        e.name.span(),
                        "engine",
                        format!("{name:?} needs an endpoint, a multiproc_dir or a scrape"),
                    ))
                }
            }
            scrapes.extend(e.scrape.iter().map(|a| crate::source::scrape::ScrapeSpec {
                engine: idx,
                address: a.clone(),
            }));
            if let Some(d) = &e.multiproc_dir {
                multiproc_dirs.push((idx, d.clone()));
            }
            details.push(e.rank_detail.unwrap_or(state.rank_detail.default));
            engines.push(EngineInfo {
                name: name.to_owned(),
                labels: labels.0.into_iter().collect(),
            });
        }

        state.rank_detail.engines = details;
        let mut demo = None;
        let engine_from_flags =
            args.endpoint.is_some() || args.multiproc_dir.is_some() || !args.scrape.is_empty();
        if engine_from_flags {
            let idx = engines.len();
            if engines.iter().any(|x| x.name == args.engine) {
                return Err(err(format!(
                    "--engine {:?} is also declared in the config file",
                    args.engine
                )));
            }
            if let Some(base) = &args.endpoint {
                let ranks =
                    RankRange::parse(&args.ranks).map_err(|m| err(format!("--ranks: {m}")))?;
                endpoints
                    .extend(expand(idx, base, ranks).map_err(|m| err(format!("--endpoint: {m}")))?);
            }
            if let Some(d) = &args.multiproc_dir {
                multiproc_dirs.push((idx, d.clone()));
            }
            scrapes.extend(
                args.scrape
                    .iter()
                    .map(|a| crate::source::scrape::ScrapeSpec {
                        engine: idx,
                        address: a.clone(),
                    }),
            );
            engines.push(EngineInfo {
                name: args.engine.clone(),
                labels: parse_label_flags(&args.labels)?,
            });
        } else if !args.labels.is_empty() {
            return Err(err(
                "--label applies to the engine given with --endpoint, --multiproc-dir or --scrape"
                    .into(),
            ));
        }
        let nats_ingest =
            args.nats.nats.is_some() || file.nats.as_ref().is_some_and(|n| n.has_url());
        if args.demo || (engines.is_empty() && !engine_from_flags && !nats_ingest) {
            if args.demo_ranks == 0 || args.demo_ranks > 64 {
                return Err(err("--demo-ranks must be from 1 to 64".into()));
            }
            let dir =
                std::env::temp_dir().join(format!("fpm-exporter-demo-{}", std::process::id()));
            let base = format!("ipc://{}/rank", dir.display());
            let idx = engines.len();
            endpoints.extend(
                expand(
                    idx,
                    &base,
                    RankRange {
                        start: 0,
                        end: args.demo_ranks,
                    },
                )
                .map_err(err)?,
            );
            engines.push(EngineInfo {
                name: "demo".into(),
                labels: vec![
                    ("model".into(), "simulated".into()),
                    ("role".into(), "agg".into()),
                ],
            });
            demo = Some(DemoSettings {
                endpoint: base,
                ranks: args.demo_ranks,
            });
        }
        let record = match &args.record {
            None => None,
            Some(path) => {
                let max_bytes = args
                    .record_max_bytes
                    .unwrap_or(crate::capture::recorder::DEFAULT_MAX_BYTES);
                if max_bytes < 4096 {
                    return Err(err("--record-max-bytes must be at least 4096".into()));
                }
                let keep = args
                    .record_keep
                    .unwrap_or(crate::capture::recorder::DEFAULT_KEEP);
                if keep > 1000 {
                    return Err(err("--record-keep must be at most 1000".into()));
                }
                let r = crate::capture::recorder::RecordSettings {
                    path: path.clone(),
                    max_bytes,
                    keep,
                };
                crate::capture::recorder::check_target(&r).map_err(err)?;
                Some(r)
            }
        };
        let api_token = match &args.api_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("--api-token-file {}: {e}", path.display())))?;
                Some(crate::http::auth::ApiToken::new(&text).ok_or_else(|| {
                    err(format!(
                        "--api-token-file {}: the file is empty",
                        path.display()
                    ))
                })?)
            }
            None => std::env::var("FPM_API_TOKEN")
                .ok()
                .and_then(|t| crate::http::auth::ApiToken::new(&t)),
        };
        if args.protect_metrics && api_token.is_none() {
            return Err(err(
                "--protect-metrics needs a token (--api-token-file or FPM_API_TOKEN)".into(),
            ));
        }
        let http_idle_timeout = args
            .http_idle_timeout
            .unwrap_or(crate::http::DEFAULT_IDLE_TIMEOUT);
        if http_idle_timeout < Duration::from_millis(100) {
            return Err(err("--http-idle-timeout must be at least 100ms".into()));
        }
        let http_write_timeout = args
            .http_write_timeout
            .unwrap_or(crate::http::DEFAULT_WRITE_TIMEOUT);
        if http_write_timeout < Duration::from_millis(100) {
            return Err(err("--http-write-timeout must be at least 100ms".into()));
        }
        let max_scrapes = args.max_scrapes.unwrap_or(crate::http::DEFAULT_MAX_SCRAPES);
        if max_scrapes == 0 {
            return Err(err("--max-scrapes must be at least 1".into()));
        }
        if args
            .metrics_listen
            .is_some_and(|m| m == listen && m.port() != 0)
        {
            return Err(err("--metrics-listen must differ from --listen".into()));
        }
        let mut scopes: Vec<_> = file.engine.iter().map(|e| e.nats.clone()).collect();
        scopes.resize(engines.len(), None);
        let nats = crate::source::nats::config::NatsSettings::resolve(
            &args.nats,
            file.nats.as_ref(),
            &scopes,
        )
        .map_err(err)?;
        let multiproc = crate::source::multiproc::MultiprocSettings {
            max_bytes: args
                .multiproc_max_bytes
                .or(file.multiproc_max_bytes)
                .unwrap_or(crate::source::multiproc::DEFAULT_MAX_BYTES),
            pid_check: !args.multiproc_no_pid_check && file.multiproc_pid_check.unwrap_or(true),
        };
        if multiproc.max_bytes < 65_536 {
            return Err(err("multiproc_max_bytes must be at least 65536".into()));
        }
        let merge_engine_metrics =
            args.merge_engine_metrics || file.merge_engine_metrics.unwrap_or(false);
        if merge_engine_metrics && multiproc_dirs.is_empty() && scrapes.is_empty() {
            return Err(err(
                "--merge-engine-metrics needs an engine with --multiproc-dir or --scrape".into(),
            ));
        }
        let scrape = scrape_settings(args)?;
        // Addresses checked (and one URL under two engines refused) before starting.
        crate::source::scrape::Workers::new(&scrapes, &engines, scrape)
            .map_err(|m| err(format!("scrape: {m}")))?;
        Ok(Settings {
            scrapes,
            scrape,
            nats,
            multiproc_dirs,
            multiproc,
            merge_engine_metrics,
            listen,
            state,
            engines,
            endpoints,
            demo,
            max_streams,
            record,
            metrics_listen: args.metrics_listen,
            api_token,
            protect_metrics: args.protect_metrics,
            http_idle_timeout,
            reconnect_after,
            http_write_timeout,
            max_scrapes,
        })
    }
}

/// The remote scrape limits from the flags, checked.
fn scrape_settings(args: &RunArgs) -> Result<crate::source::scrape::ScrapeSettings, ConfigError> {
    use crate::source::scrape as s;
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

fn parse_label_flags(labels: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--label {l:?}: use KEY=VALUE")))?;
        check_label(k).map_err(|m| ConfigError(format!("--label {l:?}: {m}")))?;
        if out.iter().any(|(x, _)| x == k) {
            return Err(ConfigError(format!("--label {k:?} is given twice")));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut v = vec!["fpm-exporter"];
        v.extend(extra);
        Cli::parse_from(v).run
    }

    fn file(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Settings::from_cli(&args(&["--config", p.to_str().unwrap()]))
    }

    #[test]
    fn one_command_line_covers_all_ranks() {
        let s = Settings::from_cli(&args(&[
            "-e",
            "tcp://127.0.0.1:20380",
            "-r",
            "4",
            "--label",
            "model=m",
        ]))
        .unwrap();
        let addrs: Vec<_> = s.endpoints.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(
            addrs,
            [
                "tcp://127.0.0.1:20380",
                "tcp://127.0.0.1:20381",
                "tcp://127.0.0.1:20382",
                "tcp://127.0.0.1:20383"
            ]
        );
        assert!(s.demo.is_none());
        assert_eq!(
            s.engines[0].labels,
            vec![("model".to_string(), "m".to_string())]
        );
    }

    #[test]
    fn no_engine_means_demo() {
        let s = Settings::from_cli(&args(&[])).unwrap();
        assert!(s.demo.is_some());
        assert_eq!(s.endpoints.len(), 4);
    }

    #[test]
    fn file_with_several_engines() {
        let s = file(
            "windows = [\"5s\", \"30s\"]\n[[engine]]\nname = \"p\"\nendpoint = \"ipc:///tmp/x\"\nranks = \"0-1\"\nlabels = { role = \"prefill\" }\n\
             [[engine]]\nname = \"d\"\nendpoint = \"tcp://h:100\"\nranks = 3\n",
        )
        .unwrap();
        assert_eq!(s.state.windows, vec![5, 30]);
        assert_eq!(s.endpoints.len(), 5);
        assert_eq!(s.endpoints[1].address, "ipc:///tmp/x.1");
        assert_eq!(s.endpoints[4].address, "tcp://h:102");
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = file("[[engine]]\nname = \"a\"\nendpoint = \"udp://x\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("line 3") && e.contains("engine.endpoint"), "{e}");
        let e = file("[[engine]]\nname = \"a\"\nendpoit = \"tcp://x:1\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("endpoit") && e.contains("line 3"), "{e}");
        let e = file(
            "[[engine]]\nname = \"a\"\nendpoint = \"tcp://x:1\"\nlabels = { dp_rank = \"1\" }\n",
        )
        .unwrap_err()
        .0;
        assert!(
            e.contains("line 4") && e.contains("used by the exporter"),
            "{e}"
        );
        let e = file("reconnect_after = \"soon\"\n").unwrap_err().0;
        assert!(e.contains("line 1") && e.contains("reconnect_after"), "{e}");
        let e = file("stale_after = \"soon\"\n").unwrap_err().0;
        assert!(e.contains("line 1") && e.contains("stale_after"), "{e}");
        let e = Settings::from_cli(&args(&["-e", "tcp://h:65535", "-r", "2"]))
            .unwrap_err()
            .0;
        assert!(e.contains("--endpoint") && e.contains("65536"), "{e}");
    }

    #[test]
    fn rank_detail_is_lean_by_default_and_set_per_engine() {
        use crate::sink::prometheus::detail::RankDetail::{Full, Lean};
        let s = Settings::from_cli(&args(&["--demo"])).unwrap();
        assert_eq!(s.state.rank_detail.of(0), Lean);
        let s = Settings::from_cli(&args(&["--demo", "--rank-detail", "full"])).unwrap();
        assert_eq!(s.state.rank_detail.of(0), Full);
        let toml = "rank_detail = \"full\"\n[[engine]]\nname = \"a\"\nendpoint = \"tcp://h:1\"\nrank_detail = \"lean\"\n\
                    [[engine]]\nname = \"b\"\nendpoint = \"tcp://h:2\"\n";
        let s = file(toml).unwrap();
        assert_eq!(
            (s.state.rank_detail.of(0), s.state.rank_detail.of(1)),
            (Lean, Full)
        );
        // Engines a source adds later (NATS scopes) take the default.
        assert_eq!(s.state.rank_detail.of(7), Full);
        let e = file("[[engine]]\nname = \"a\"\nendpoint = \"tcp://h:1\"\nrank_detail = \"max\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("line 4") && e.contains("lean"), "{e}");
        assert!(Cli::try_parse_from(["fpm-exporter", "--rank-detail", "max"]).is_err());
    }

    #[test]
    fn reconnect_after_defaults_to_30s_and_never_undercuts_stale_after() {
        let s = Settings::from_cli(&args(&["--demo"])).unwrap();
        assert_eq!(s.reconnect_after, Duration::from_secs(30));
        let s = Settings::from_cli(&args(&["--stale-after", "45s"])).unwrap();
        assert_eq!(
            s.reconnect_after,
            Duration::from_secs(45),
            "follows a long stale_after"
        );
        let s = file("stale_after = \"2s\"\nreconnect_after = \"5s\"\n").unwrap();
        assert_eq!(s.reconnect_after, Duration::from_secs(5));
        let s = Settings::from_cli(&args(&["--reconnect-after", "4s"])).unwrap();
        assert_eq!(s.reconnect_after, Duration::from_secs(4));
        let e = Settings::from_cli(&args(&["--stale-after", "5s", "--reconnect-after", "2s"]))
            .unwrap_err()
            .0;
        assert!(
            e.contains("reconnect_after") && e.contains("stale_after"),
            "{e}"
        );
    }
}
