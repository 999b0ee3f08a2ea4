//! The command line: the exporter's flags and the subcommands. Defaults that depend
//! on other settings are resolved in [`super::Settings::from_cli`], so most flags
//! here are `Option`s.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
        /// Give this rank three times the others' work.
        #[arg(long, value_name = "RANK")]
        skew: Option<u64>,
        /// Make this rank take twice as long for the same work.
        #[arg(long, value_name = "RANK")]
        slow: Option<u64>,
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
    /// Watch a running exporter in the terminal: every rank, live (keys: w t u r sort, e engine, space pause, q quit).
    Top {
        /// The exporter's base URL.
        #[arg(default_value = "http://127.0.0.1:9380", value_name = "URL")]
        url: String,
        /// File holding the exporter's API bearer token; the env FPM_API_TOKEN may give the token itself.
        #[arg(long, value_name = "FILE")]
        api_token_file: Option<PathBuf>,
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
    /// Give this rank of the simulated engine three times the others' work (an imbalanced engine).
    #[arg(long, value_name = "RANK")]
    pub demo_skew: Option<u64>,
    /// Make this rank of the simulated engine take twice as long for the same work (a straggler).
    #[arg(long, value_name = "RANK")]
    pub demo_slow: Option<u64>,
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
    /// Longest a frame waits in its socket before it is read, so frames of many ranks are read in one wakeup; every HTTP read first takes in what has arrived, and while /v1/stream clients, the NATS relay or the recorder consume events it is at most 1ms; 0 reads each frame on arrival [default: 500ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub receive_delay: Option<Duration>,
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
    /// The engine's load-snapshot file, or a glob of them (e.g. "/dev/shm/sglang_loads_*.shm"): serve SGLang's /v1/loads for it (the engine of --endpoint, or one of its own).
    #[arg(long, value_name = "PATH|GLOB")]
    pub load_snapshot: Option<String>,
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
    pub rank_detail: Option<crate::state::detail::RankDetail>,
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
