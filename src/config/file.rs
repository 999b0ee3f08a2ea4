//! The TOML file's schema and the locations of its values: every error about the
//! file names the key and its line.

use super::ConfigError;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The TOML file (`--config`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) windows: Option<Spanned<Vec<String>>>,
    pub(super) stale_after: Option<Spanned<String>>,
    pub(super) expire_after: Option<Spanned<String>>,
    pub(super) reconnect_after: Option<Spanned<String>>,
    pub(super) receive_delay: Option<Spanned<String>>,
    pub(super) max_ranks: Option<usize>,
    pub(super) max_streams: Option<usize>,
    pub(super) nats: Option<crate::source::nats::config::NatsFile>,
    pub(super) merge_engine_metrics: Option<bool>,
    pub(super) multiproc_max_bytes: Option<u64>,
    pub(super) multiproc_pid_check: Option<bool>,
    pub(super) rank_detail: Option<crate::state::detail::RankDetail>,
    #[serde(default)]
    pub(super) engine: Vec<FileEngine>,
}

/// One `[[engine]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEngine {
    pub(super) name: Spanned<String>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) multiproc_dir: Option<PathBuf>,
    pub(super) load_snapshot: Option<Spanned<String>>,
    pub(super) sglang_version: Option<String>,
    pub(super) accelerator: Option<String>,
    pub(super) num_accelerators: Option<u64>,
    #[serde(default)]
    pub(super) scrape: Vec<String>,
    #[serde(default)]
    pub(super) ranks: Option<Spanned<RanksValue>>,
    #[serde(default)]
    pub(super) labels: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    pub(super) nats: Option<crate::source::nats::config::EngineScopeFile>,
    pub(super) rank_detail: Option<crate::state::detail::RankDetail>,
}

/// `ranks = 4` or `ranks = "0-3"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RanksValue {
    Count(u64),
    Range(String),
}

/// The file's text and name, to turn a value's span into "FILE: line N: KEY: ...".
#[derive(Debug, Default)]
pub(super) struct Source {
    path: String,
    text: String,
}

/// Reads and parses `--config`; no file is an empty one.
pub(super) fn load(path: Option<&Path>) -> Result<(FileConfig, Source), ConfigError> {
    let Some(path) = path else {
        return Ok((FileConfig::default(), Source::default()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let path = path.display().to_string();
    Ok((file, Source { path, text }))
}

impl Source {
    /// An error about the value at `span` under `key`.
    pub(super) fn at(&self, span: Range<usize>, key: &str, msg: String) -> ConfigError {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError(format!("{}: line {line}: {key}: {msg}", self.path))
    }

    /// A duration value such as `"30s"`.
    pub(super) fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(v.get_ref()).map_err(|e| {
            self.at(
                v.span(),
                key,
                format!("{:?} is not a duration: {e}", v.get_ref()),
            )
        })
    }
}
