//! Settings of the HTTP side: limits, timeouts and the bearer token. They live here,
//! not in `crate::http`, so configuration never depends on the server it configures.

use super::{ConfigError, RunArgs};
use std::sync::Arc;
use std::time::Duration;

/// Limits and options of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Most concurrent `/v1/stream` clients; more get 503.
    pub max_streams: usize,
    /// Bearer token required on the JSON API (`/v1/*`), if any.
    pub api_token: Option<ApiToken>,
    /// Whether `/metrics` requires the token too.
    pub protect_metrics: bool,
    /// How long a connection may take to send a request's headers, and how long an
    /// idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// How long a response write may make no progress (a client that stopped reading).
    pub write_timeout: Duration,
    /// Most `/metrics` renders at once; more get 503.
    pub max_scrapes: usize,
}

/// Default of [`HttpSettings::max_streams`].
pub const DEFAULT_MAX_STREAMS: usize = 256;
/// Default of [`HttpSettings::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`HttpSettings::write_timeout`]: a scrape timeout's worth (Prometheus
/// allows at most the scrape interval, commonly 10 to 30 s).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`HttpSettings::max_scrapes`]: HA Prometheus pairs, dashboards and people
/// with curl, while bounding the blocking threads stalled scrapers can hold.
pub const DEFAULT_MAX_SCRAPES: usize = 8;

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_streams: DEFAULT_MAX_STREAMS,
            api_token: None,
            protect_metrics: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_scrapes: DEFAULT_MAX_SCRAPES,
        }
    }
}

impl HttpSettings {
    /// The flags' values, checked; `max_streams` may also come from the file.
    pub(super) fn resolve(
        args: &RunArgs,
        file_max_streams: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let err = |m: &str| Err(ConfigError(m.into()));
        let api_token = api_token(args)?;
        if args.protect_metrics && api_token.is_none() {
            return err("--protect-metrics needs a token (--api-token-file or FPM_API_TOKEN)");
        }
        let out = HttpSettings {
            max_streams: args
                .max_streams
                .or(file_max_streams)
                .unwrap_or(DEFAULT_MAX_STREAMS),
            api_token,
            protect_metrics: args.protect_metrics,
            idle_timeout: args.http_idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            write_timeout: args.http_write_timeout.unwrap_or(DEFAULT_WRITE_TIMEOUT),
            max_scrapes: args.max_scrapes.unwrap_or(DEFAULT_MAX_SCRAPES),
        };
        if out.idle_timeout < Duration::from_millis(100) {
            return err("--http-idle-timeout must be at least 100ms");
        }
        if out.write_timeout < Duration::from_millis(100) {
            return err("--http-write-timeout must be at least 100ms");
        }
        if out.max_scrapes == 0 {
            return err("--max-scrapes must be at least 1");
        }
        Ok(out)
    }
}

/// The token of `--api-token-file`, else of the env `FPM_API_TOKEN`, if any.
fn api_token(args: &RunArgs) -> Result<Option<ApiToken>, ConfigError> {
    let Some(path) = &args.api_token_file else {
        return Ok(std::env::var("FPM_API_TOKEN")
            .ok()
            .and_then(|t| ApiToken::new(&t)));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--api-token-file {}: {e}", path.display())))?;
    ApiToken::new(&text).map(Some).ok_or_else(|| {
        ConfigError(format!(
            "--api-token-file {}: the file is empty",
            path.display()
        ))
    })
}

/// A bearer token, kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl ApiToken {
    /// Wraps a token; surrounding whitespace (a file's trailing newline) is dropped.
    /// Returns `None` for an empty token.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| ApiToken(t.into()))
    }

    /// Whether `presented` equals the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let diff = presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens_only() {
        let t = ApiToken::new("s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret "));
        assert!(!t.matches(b"S3cret"));
        assert!(ApiToken::new(" \n").is_none());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
