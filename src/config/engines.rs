//! Engines and their endpoints: the file's `[[engine]]` tables, the engine the flags
//! describe (`--endpoint`, `--multiproc-dir`, `--scrape`), and the simulated engine
//! when nothing else is given. Engine indices follow that order.

use super::file::{FileConfig, FileEngine, RanksValue, Source};
use super::{ConfigError, RunArgs};
use crate::address::{rank_address, RankRange};
use crate::sink::load_snapshot::DocumentMeta;
use crate::source::load_snapshot::SnapshotSpec;
use crate::source::scrape::ScrapeSpec;
use crate::source::EndpointSpec;
use crate::state::detail::RankDetail;
use crate::state::EngineInfo;
use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// The simulated engine's settings.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Base endpoint.
    pub endpoint: String,
    /// Number of ranks.
    pub ranks: u64,
    /// The rank given `--demo-skew`: three times the others' work.
    pub heavy: Option<u64>,
    /// The rank given `--demo-slow`: twice as long for the same work.
    pub slow: Option<u64>,
}

/// Every engine and what to read of it, before the limits are applied.
#[derive(Debug, Default)]
pub(super) struct Engines {
    pub(super) engines: Vec<EngineInfo>,
    pub(super) endpoints: Vec<EndpointSpec>,
    pub(super) multiproc_dirs: Vec<(usize, PathBuf)>,
    pub(super) scrapes: Vec<ScrapeSpec>,
    pub(super) load_snapshots: Vec<SnapshotSpec>,
    pub(super) load_meta: BTreeMap<usize, DocumentMeta>,
    /// `rank_detail` of each file engine (the others take the default).
    pub(super) details: Vec<RankDetail>,
    pub(super) demo: Option<DemoSettings>,
}

/// Resolves the engines of the file, then of the flags, then the demo if it applies.
pub(super) fn resolve(
    args: &RunArgs,
    file: &FileConfig,
    src: &Source,
    default_detail: RankDetail,
) -> Result<Engines, ConfigError> {
    let mut out = Engines::default();
    for e in &file.engine {
        out.add_file_engine(e, src, default_detail)?;
    }
    let engine_from_flags = args.endpoint.is_some()
        || args.multiproc_dir.is_some()
        || !args.scrape.is_empty()
        || args.load_snapshot.is_some();
    if engine_from_flags {
        out.add_flag_engine(args)?;
    } else if !args.labels.is_empty() {
        return Err(ConfigError(
            "--label applies to the engine given with --endpoint, --multiproc-dir, --scrape or --load-snapshot"
                .into(),
        ));
    }
    let nats_ingest = args.nats.nats.is_some() || file.nats.as_ref().is_some_and(|n| n.has_url());
    if args.demo || (out.engines.is_empty() && !engine_from_flags && !nats_ingest) {
        out.add_demo(args.demo_ranks, args.demo_skew, args.demo_slow)?;
    } else if args.demo_skew.is_some() || args.demo_slow.is_some() {
        return Err(ConfigError(
            "--demo-skew and --demo-slow apply to the simulated engine, which does not run \
             when an engine is given (add --demo)"
                .into(),
        ));
    }
    Ok(out)
}

impl Engines {
    fn add_file_engine(
        &mut self,
        e: &FileEngine,
        src: &Source,
        default_detail: RankDetail,
    ) -> Result<(), ConfigError> {
        let idx = self.engines.len();
        let name = e.name.get_ref().trim();
        if name.is_empty() {
            return Err(src.at(e.name.span(), "engine.name", "must not be empty".into()));
        }
        if self.engines.iter().any(|x| x.name == name) {
            return Err(src.at(
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
            .map_err(|m| src.at(r.span(), "engine.ranks", m.0))?,
        };
        let (labels, span) = e
            .labels
            .as_ref()
            .map(|l| (l.get_ref().clone(), l.span()))
            .unwrap_or_default();
        for k in labels.keys() {
            check_label(k).map_err(|m| src.at(span.clone(), "engine.labels", m))?;
        }
        match &e.endpoint {
            Some(ep) => self.endpoints.extend(
                expand(idx, ep.get_ref(), ranks)
                    .map_err(|m| src.at(ep.span(), "engine.endpoint", m))?,
            ),
            None if e.multiproc_dir.is_some()
                || !e.scrape.is_empty()
                || e.load_snapshot.is_some() => {}
            None => {
                return Err(src.at(
                    e.name.span(),
                    "engine",
                    format!(
                        "{name:?} needs an endpoint, a multiproc_dir, a scrape or a load_snapshot"
                    ),
                ))
            }
        }
        self.add_scrapes(idx, &e.scrape);
        if let Some(d) = &e.multiproc_dir {
            self.multiproc_dirs.push((idx, d.clone()));
        }
        if let Some(p) = &e.load_snapshot {
            check_pattern(p.get_ref()).map_err(|m| src.at(p.span(), "engine.load_snapshot", m))?;
            self.load_snapshots.push(SnapshotSpec {
                engine: idx,
                pattern: p.get_ref().clone(),
            });
            let mut meta = DocumentMeta::default();
            if let Some(v) = &e.sglang_version {
                meta.version = v.clone();
            }
            meta.accelerator = e.accelerator.clone();
            if let Some(n) = e.num_accelerators {
                meta.num_accelerators = n;
            }
            self.load_meta.insert(idx, meta);
        } else if e.sglang_version.is_some()
            || e.accelerator.is_some()
            || e.num_accelerators.is_some()
        {
            return Err(src.at(
                e.name.span(),
                "engine",
                format!("{name:?}: sglang_version, accelerator and num_accelerators describe a load_snapshot engine; give load_snapshot too"),
            ));
        }
        self.details.push(e.rank_detail.unwrap_or(default_detail));
        self.engines.push(EngineInfo {
            name: name.to_owned(),
            labels: labels.into_iter().collect(),
        });
        Ok(())
    }

    fn add_flag_engine(&mut self, args: &RunArgs) -> Result<(), ConfigError> {
        let idx = self.engines.len();
        if self.engines.iter().any(|x| x.name == args.engine) {
            return Err(ConfigError(format!(
                "--engine {:?} is also declared in the config file",
                args.engine
            )));
        }
        if let Some(base) = &args.endpoint {
            let ranks =
                RankRange::parse(&args.ranks).map_err(|m| ConfigError(format!("--ranks: {m}")))?;
            let specs =
                expand(idx, base, ranks).map_err(|m| ConfigError(format!("--endpoint: {m}")))?;
            self.endpoints.extend(specs);
        }
        if let Some(d) = &args.multiproc_dir {
            self.multiproc_dirs.push((idx, d.clone()));
        }
        if let Some(p) = &args.load_snapshot {
            check_pattern(p).map_err(|m| ConfigError(format!("--load-snapshot: {m}")))?;
            self.load_snapshots.push(SnapshotSpec {
                engine: idx,
                pattern: p.clone(),
            });
            self.load_meta.insert(idx, DocumentMeta::default());
        }
        self.add_scrapes(idx, &args.scrape);
        self.engines.push(EngineInfo {
            name: args.engine.clone(),
            labels: parse_label_flags(&args.labels)?,
        });
        Ok(())
    }

    fn add_scrapes(&mut self, engine: usize, addresses: &[String]) {
        self.scrapes.extend(addresses.iter().map(|a| ScrapeSpec {
            engine,
            address: a.clone(),
        }));
    }

    /// The simulated engine, publishing on IPC sockets in a directory of its own.
    fn add_demo(
        &mut self,
        ranks: u64,
        heavy: Option<u64>,
        slow: Option<u64>,
    ) -> Result<(), ConfigError> {
        // 256: a large data-parallel deployment, the size the live view is made for.
        if ranks == 0 || ranks > 256 {
            return Err(ConfigError("--demo-ranks must be from 1 to 256".into()));
        }
        for (flag, rank) in [("--demo-skew", heavy), ("--demo-slow", slow)] {
            if rank.is_some_and(|r| r >= ranks) {
                return Err(ConfigError(format!(
                    "{flag} names rank {}, but the demo engine has ranks 0 to {}",
                    rank.unwrap_or_default(),
                    ranks - 1
                )));
            }
        }
        // One directory per demo instance, not per process: two exporters started in
        // one process (tests, library users) must not bind each other's sockets.
        static INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fpm-exporter-demo-{}-{n}", std::process::id()));
        let base = format!("ipc://{}/rank", dir.display());
        let idx = self.engines.len();
        let specs = expand(
            idx,
            &base,
            RankRange {
                start: 0,
                end: ranks,
            },
        )
        .map_err(ConfigError)?;
        self.endpoints.extend(specs);
        self.engines.push(EngineInfo {
            name: "demo".into(),
            labels: vec![
                ("model".into(), "simulated".into()),
                ("role".into(), "agg".into()),
            ],
        });
        self.demo = Some(DemoSettings {
            endpoint: base,
            ranks,
            heavy,
            slow,
        });
        Ok(())
    }
}

/// A path or a glob the `glob` crate accepts.
fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    glob::Pattern::new(p)
        .map(|_| ())
        .map_err(|e| format!("{p:?} is not a valid glob: {e}"))
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
