//! Configuration: command-line flags for one engine, a TOML file for several.
//! Every error names the flag, or the key and line of the file.
//!
//! `cli` defines the flags, `file` the TOML schema, `engines` resolves engines and
//! their endpoints, `settings` merges and validates everything into [`Settings`];
//! `http` and `record` hold the settings of the HTTP side and of `--record`, which
//! those parts take from here.

mod cli;
mod engines;
mod file;
pub mod http;
pub mod record;
mod settings;
#[cfg(test)]
mod tests;

pub use cli::{Cli, Command, LogFormat, RunArgs};
pub use engines::{DemoSettings, RESERVED_LABELS};
pub use file::FileConfig;
pub use http::{ApiToken, HttpSettings};
pub use record::RecordSettings;
pub use settings::Settings;

/// The default HTTP address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9380";

/// A configuration error with its location.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
