//! The Prometheus sink: renders `/metrics` from a registry snapshot at scrape time,
//! one collector per concern (ranks, engines, endpoints, the exporter itself).
//! Expired ranks are simply absent from the snapshot, so their series disappear.

mod accept;
pub mod balance;
pub mod detail;
pub mod endpoints;
pub mod engine_metrics;
pub mod engines;
pub mod exporter;
pub mod load_snapshot;
pub mod model;
pub mod nats;
pub mod ranks;
pub mod record;
pub mod stats;
pub mod text;

use crate::state::{RankFilter, Registry};
use text::{push_label, ChunkSink, Family, Format, Writer};

/// Renders the whole exposition in `format`.
pub fn render(registry: &Registry, format: Format, start_unix_secs: f64) -> String {
    let ranks = registry.rank_count();
    let mut w = Writer::new(format, 4096 + ranks * 24 * 1024);
    render_into(registry, &mut w, start_unix_secs, Extras::default());
    w.finish()
}

/// Renders the exposition in pieces of about `chunk` bytes handed to `sink` (the last
/// piece is returned): with 1,024 ranks the whole is ~23 MB, which the allocator would
/// otherwise keep resident after every scrape.
pub fn render_streaming(
    registry: &Registry,
    format: Format,
    start_unix_secs: f64,
    chunk: usize,
    sink: ChunkSink,
) -> String {
    render_streaming_with(
        registry,
        format,
        start_unix_secs,
        chunk,
        sink,
        Extras::default(),
    )
}

/// What `/metrics` carries besides the rank state, each when configured.
#[derive(Default, Clone, Copy)]
pub struct Extras<'a> {
    /// The subscribers' endpoints (`fpm_endpoint_*`); none in a bare render.
    pub endpoints: &'a [std::sync::Arc<crate::source::endpoint::EndpointStats>],
    /// The multiprocess directories (`--multiproc-dir`).
    pub engine: Option<&'a crate::source::multiproc::EngineMetrics>,
    /// The recorder's counters (`--record`).
    pub recorder: Option<&'a crate::capture::recorder::RecordStats>,
    /// The remote engine workers (`--scrape`).
    pub workers: Option<&'a crate::source::scrape::Workers>,
    /// The HTTP side's limit counters (zero when no server runs, e.g. a bare render).
    pub http: Option<&'a crate::sink::serving::HttpStats>,
    /// The NATS client's counters (`--nats`, `--nats-publish`).
    pub nats: Option<&'a crate::source::nats::NatsStats>,
    /// Connected `/v1/stream` clients.
    pub stream_clients: usize,
    /// The engines' load snapshots (`load_snapshot`), read just before the render.
    pub load_snapshots: Option<&'a crate::source::load_snapshot::LoadSnapshots>,
}

/// [`render_streaming`] plus, when engines have multiprocess directories, the
/// reader's counters and (with `--merge-engine-metrics`) the engines' own families;
/// an engine family named like one of the exporter's is left out and counted;
/// with `--record`, the recorder's counters.
pub fn render_streaming_with(
    registry: &Registry,
    format: Format,
    start_unix_secs: f64,
    chunk: usize,
    sink: ChunkSink,
    extras: Extras<'_>,
) -> String {
    let mut w = Writer::streaming(format, chunk, sink);
    render_into(registry, &mut w, start_unix_secs, extras);
    let Extras {
        engine, workers, ..
    } = extras;
    if let Some(em) = engine {
        engine_metrics::write_stats(&mut w, em);
    }
    if let Some(ws) = workers {
        engine_metrics::write_scrape_stats(&mut w, ws);
    }
    let merge = engine.is_some_and(|e| e.merge_into_metrics)
        || workers.is_some_and(|w| w.merge_into_metrics);
    if merge {
        let own: Vec<Family> = all_families();
        let skip = |name: &str| {
            own.iter()
                .any(|f| f.name == name || f.name.strip_suffix("_total") == Some(name))
        };
        let em = engine.filter(|e| e.merge_into_metrics);
        let ws = workers.filter(|w| w.merge_into_metrics);
        engine_metrics::write_engines(&mut w, em, ws, &skip);
    }
    w.finish()
}

fn render_into(registry: &Registry, w: &mut Writer, start_unix_secs: f64, extras: Extras<'_>) {
    let Extras {
        endpoints,
        recorder,
        http,
        nats,
        stream_clients,
        load_snapshots,
        ..
    } = extras;
    // Relayed engines' series are the edges' to serve (`--nats-relayed-series edge`).
    let filter = RankFilter {
        skip_engines: nats.map(|n| n.hidden_engines()).unwrap_or_default(),
        ..RankFilter::default()
    };
    let snap = registry.snapshot(&filter);
    let engine_labels: Vec<String> = registry
        .engines
        .iter()
        .map(|e| {
            let mut l = String::new();
            push_label(&mut l, "engine", &e.name);
            for (k, v) in &e.labels {
                push_label(&mut l, k, v);
            }
            l
        })
        .collect();
    let rank_labels: Vec<String> = snap
        .ranks
        .iter()
        .map(|r| {
            let mut l = String::with_capacity(96);
            push_label(&mut l, "engine", &registry.engines[r.key.engine].name);
            push_label(&mut l, "worker_id", &r.key.worker_id);
            push_label(&mut l, "dp_rank", itoa::Buffer::new().format(r.key.dp_rank));
            for (k, v) in &registry.engines[r.key.engine].labels {
                push_label(&mut l, k, v);
            }
            l
        })
        .collect();
    let window_names: Vec<String> = registry
        .config
        .windows
        .iter()
        .map(|w| format!("{w}s"))
        .collect();
    let levels = &registry.config.rank_detail;
    let details: Vec<crate::state::detail::RankDetail> =
        snap.ranks.iter().map(|r| levels.of(r.key.engine)).collect();
    ranks::write(w, &snap.ranks, &rank_labels, &details, &window_names);
    engines::write(w, &snap.engines, &engine_labels, &window_names);
    balance::write_engines(w, &snap.engines, &engine_labels, &window_names);
    balance::write_ranks(w, &snap.ranks, &rank_labels, &window_names);
    model::write(
        w,
        &snap.ranks,
        &rank_labels,
        &details,
        &snap.engines,
        &engine_labels,
    );
    endpoints::write(w, endpoints, &engine_labels);
    if let Some(snaps) = load_snapshots {
        load_snapshot::write(w, snaps, &engine_labels, |e| levels.of(e));
    }
    exporter::write(w, registry, start_unix_secs, http, stream_clients);
    if let Some(stats) = recorder {
        record::write(w, stats);
    }
    if let Some(stats) = nats {
        nats::write(w, stats);
    }
}

/// Families a lean rank leaves out (they stay in `/v1/ranks`); the window mean is
/// kept for [`detail::LEAN_MEAN_FIELDS`].
pub fn full_only_families() -> Vec<Family> {
    let mut v = vec![ranks::WINDOW_VARIANCE, ranks::WINDOW_MIN, ranks::WINDOW_MAX];
    v.extend(model::rank_families());
    v
}

/// Every metric family the exporter can write (docs/metrics.md documents each one).
pub fn all_families() -> Vec<Family> {
    let mut v = ranks::families();
    v.extend(engines::families());
    v.extend(balance::families());
    v.extend(model::families());
    v.extend(endpoints::families());
    v.extend(exporter::families());
    v.extend(record::families());
    v.extend(nats::families());
    v.extend(engine_metrics::families());
    v.extend(load_snapshot::families());
    v
}
