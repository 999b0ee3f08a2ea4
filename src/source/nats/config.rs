//! NATS settings: flags, the TOML `[nats]` section, and how they become connect
//! options of `async-nats` (auth, TLS, reconnects).

use super::subject::Scope;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of the NATS side (flattened into the exporter's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// Ingest Dynamo's FPM events from this NATS server (comma-separated URLs for a cluster).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Only this Dynamo namespace (default: all).
    #[arg(long, value_name = "NS", requires = "nats")]
    pub nats_namespace: Option<String>,
    /// Only this Dynamo component (default: all).
    #[arg(long, value_name = "NAME", requires = "nats")]
    pub nats_component: Option<String>,
    /// Only this Dynamo endpoint (default: all).
    #[arg(long, value_name = "NAME", requires = "nats")]
    pub nats_endpoint: Option<String>,
    /// Relay every frame accepted from ZMQ to this NATS server, in Dynamo's envelope, and keep the KV load table.
    #[arg(long, value_name = "URL")]
    pub nats_publish: Option<String>,
    /// This node's name in relayed ranks (the `node` label, the `Fpm-Node` header, the KV key) [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node: Option<String>,
    /// JetStream key-value bucket of the per-rank loads ("" for none) [default: fpm-loads].
    #[arg(long, value_name = "NAME")]
    pub nats_kv_bucket: Option<String>,
    /// Who serves the Prometheus series of ranks an edge relayed: `edge` (the edges, scraped per node; this exporter leaves them out of /metrics) or `central` (this exporter too) [default: edge].
    #[arg(long, value_name = "WHO")]
    pub nats_relayed_series: Option<RelayedSeries>,
    /// File holding the NATS token.
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// NATS user (with --nats-password-file).
    #[arg(long, value_name = "USER")]
    pub nats_user: Option<String>,
    /// File holding the NATS password.
    #[arg(long, value_name = "FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// File holding an NKey seed (SU...).
    #[arg(long, value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// NATS credentials file (JWT and NKey seed, from `nsc`).
    #[arg(long, value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for the NATS server (turns TLS on).
    #[arg(long, value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate PEM for mutual TLS (with --nats-tls-key).
    #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key PEM for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Oldest frame taken or relayed (by its envelope's published_at); older ones are counted as `stale` and skipped ("0s": no bound) [default: --stale-after].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub nats_max_frame_age: Option<Duration>,
}

/// The TOML `[nats]` section; flags override it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsFile {
    url: Option<String>,
    namespace: Option<String>,
    component: Option<String>,
    endpoint: Option<String>,
    publish_url: Option<String>,
    /// Default scope of relayed engines that do not set their own.
    publish_namespace: Option<String>,
    publish_component: Option<String>,
    publish_endpoint: Option<String>,
    kv_bucket: Option<String>,
    relayed_series: Option<RelayedSeries>,
    token_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    nkey_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_frame_age: Option<String>,
}

/// An engine's own relay scope in the TOML file (`[[engine]] nats = {...}`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineScopeFile {
    namespace: Option<String>,
    component: Option<String>,
    endpoint: Option<String>,
}

/// Authentication, as async-nats offers it.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    token_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    nkey_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Validated NATS settings.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server to ingest from, if any.
    pub ingest_url: Option<String>,
    /// Subscription subject (filters applied).
    pub ingest_subject: String,
    /// Server to publish to, if any.
    pub publish_url: Option<String>,
    /// Relay scope of each configured engine, by engine index.
    pub publish_scopes: Vec<Scope>,
    /// KV bucket of the loads (`None`: no KV).
    pub kv_bucket: Option<String>,
    /// This node's identity, carried by everything it relays: two edges with one
    /// configuration must never merge their ranks.
    pub node: String,
    /// Who serves the Prometheus series of relayed ranks.
    pub relayed_series: RelayedSeries,
    /// Auth and TLS, shared by both connections.
    pub auth: NatsAuth,
    /// Oldest frame the ingest takes and the relay sends (`None`: the rank staleness
    /// threshold, `--stale-after`; zero: no bound).
    pub max_frame_age: Option<Duration>,
}

/// Which exporter's `/metrics` carries the per-rank and engine-level series of the ranks
/// an fpm-exporter edge relayed (their messages name a node in [`super::NODE_HEADER`]).
/// Ranks that publish to NATS themselves (Dynamo's `FpmDirectPublisher`) have no edge,
/// so the ingesting exporter serves their series either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayedSeries {
    /// The edges, scraped per node; the central leaves relayed engines out of `/metrics`
    /// (they stay in its JSON feeds), so no rank is counted twice.
    #[default]
    Edge,
    /// The central as well (every rank of the fleet in one target): scrape the edges
    /// for their own health series only.
    Central,
}

/// Dynamo's own defaults for an endpoint's scope.
pub const DEFAULT_SCOPE: (&str, &str, &str) = ("dynamo", "backend", "generate");

/// The default KV bucket.
pub const DEFAULT_KV_BUCKET: &str = "fpm-loads";

impl NatsFile {
    /// Whether the section names a server to ingest from.
    pub fn has_url(&self) -> bool {
        self.url.is_some()
    }
}

impl NatsSettings {
    /// The frame-age bound in force: `--nats-max-frame-age`, else the rank staleness
    /// threshold (a frame older than that describes a rank already shown stale);
    /// `None` when set to zero.
    pub fn frame_age_bound(&self, stale_after: Duration) -> Option<Duration> {
        Some(self.max_frame_age.unwrap_or(stale_after)).filter(|d| !d.is_zero())
    }

    /// Merges flags over the file; `engine_scopes` are the per-engine overrides, by
    /// engine index. `None` when NATS is not used at all.
    pub fn resolve(
        args: &NatsArgs,
        file: Option<&NatsFile>,
        engine_scopes: &[Option<EngineScopeFile>],
    ) -> Result<Option<NatsSettings>, String> {
        let f = file.cloned().unwrap_or_default();
        let ingest_url = args.nats.clone().or(f.url);
        let publish_url = args.nats_publish.clone().or(f.publish_url);
        if ingest_url.is_none() && publish_url.is_none() {
            if file.is_some() {
                return Err("nats: give url (ingest) or publish_url (relay)".into());
            }
            return Ok(None);
        }
        for u in ingest_url.iter().chain(&publish_url) {
            check_url(u)?;
        }
        let pick = |flag: &Option<String>, file: Option<String>| flag.clone().or(file);
        let (ns, comp, ep) = (
            pick(&args.nats_namespace, f.namespace),
            pick(&args.nats_component, f.component),
            pick(&args.nats_endpoint, f.endpoint),
        );
        for (what, v) in [("namespace", &ns), ("component", &comp), ("endpoint", &ep)] {
            if let Some(v) = v {
                check_name(what, v)?;
            }
        }
        let ingest_subject =
            super::subject::filter_subject(ns.as_deref(), comp.as_deref(), ep.as_deref());
        let default_scope = Scope {
            namespace: f
                .publish_namespace
                .unwrap_or_else(|| DEFAULT_SCOPE.0.into()),
            component: f
                .publish_component
                .unwrap_or_else(|| DEFAULT_SCOPE.1.into()),
            endpoint: f.publish_endpoint.unwrap_or_else(|| DEFAULT_SCOPE.2.into()),
        };
        let publish_scopes: Vec<Scope> = engine_scopes
            .iter()
            .map(|s| {
                let s = s.clone().unwrap_or_default();
                Scope {
                    namespace: s
                        .namespace
                        .unwrap_or_else(|| default_scope.namespace.clone()),
                    component: s
                        .component
                        .unwrap_or_else(|| default_scope.component.clone()),
                    endpoint: s.endpoint.unwrap_or_else(|| default_scope.endpoint.clone()),
                }
            })
            .collect();
        if publish_url.is_some() {
            for (i, s) in publish_scopes.iter().enumerate() {
                for (what, v) in [
                    ("namespace", &s.namespace),
                    ("component", &s.component),
                    ("endpoint", &s.endpoint),
                ] {
                    check_name(what, v).map_err(|e| format!("engine {}: {e}", i + 1))?;
                }
            }
        }
        let kv_bucket = match args.nats_kv_bucket.clone().or(f.kv_bucket) {
            None => Some(DEFAULT_KV_BUCKET.to_owned()),
            Some(b) if b.is_empty() => None,
            Some(b) => {
                if !b
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    return Err(format!(
                        "nats kv bucket {b:?}: only letters, digits, - and _"
                    ));
                }
                Some(b)
            }
        };
        let node = match &args.node {
            Some(n) => n.clone(),
            None => hostname().ok_or("nats: no --node, no NODE_NAME and no hostname")?,
        };
        check_name("node", &node)?;
        let auth = NatsAuth {
            token_file: args.nats_token_file.clone().or(f.token_file),
            user: args.nats_user.clone().or(f.user),
            password_file: args.nats_password_file.clone().or(f.password_file),
            nkey_file: args.nats_nkey_file.clone().or(f.nkey_file),
            creds_file: args.nats_creds_file.clone().or(f.creds_file),
            tls_ca: args.nats_tls_ca.clone().or(f.tls_ca),
            tls_cert: args.nats_tls_cert.clone().or(f.tls_cert),
            tls_key: args.nats_tls_key.clone().or(f.tls_key),
        };
        let methods = [
            auth.token_file.is_some(),
            auth.user.is_some(),
            auth.nkey_file.is_some(),
            auth.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err("nats: give one of token, user/password, nkey or creds file".into());
        }
        if auth.user.is_some() != auth.password_file.is_some() {
            return Err("nats: user and password file go together".into());
        }
        if auth.tls_cert.is_some() != auth.tls_key.is_some() {
            return Err("nats: tls cert and key go together".into());
        }
        let max_frame_age = match (args.nats_max_frame_age, &f.max_frame_age) {
            (Some(d), _) => Some(d),
            (None, Some(s)) => Some(
                humantime::parse_duration(s)
                    .map_err(|e| format!("nats max_frame_age {s:?}: {e}"))?,
            ),
            (None, None) => None,
        };
        Ok(Some(NatsSettings {
            ingest_url,
            ingest_subject,
            publish_url,
            publish_scopes,
            kv_bucket,
            node,
            relayed_series: args
                .nats_relayed_series
                .or(f.relayed_series)
                .unwrap_or_default(),
            auth,
            max_frame_age,
        }))
    }
}

/// The machine's hostname (what a pod without `NODE_NAME` knows of its node; with
/// `hostNetwork`, the node's own). Linux keeps it in /proc; no unsafe libc call needed.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
}

/// Refuses an empty name (or one made only of blanks): it would relay into a subject
/// nobody receives, or subscribe to nothing, silently.
fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("nats {what}: must not be empty"));
    }
    if value.len() > crate::state::labels::DEFAULT_MAX_LABEL_BYTES {
        return Err(format!(
            "nats {what} {value:?}: longer than {} bytes",
            crate::state::labels::DEFAULT_MAX_LABEL_BYTES
        ));
    }
    Ok(())
}

fn check_url(u: &str) -> Result<(), String> {
    for one in u.split(',') {
        one.trim()
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("nats url {one:?}: {e}"))?;
    }
    Ok(())
}

fn read_secret(path: &PathBuf) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Longest pause between reconnect attempts: NATS back means connected within 2 s.
pub const RECONNECT_MAX: Duration = Duration::from_millis(500);

impl NatsAuth {
    /// Connect options with this auth and TLS, reconnecting forever and fast, and never
    /// failing because the server is not up yet.
    pub async fn options(&self, name: &str) -> std::io::Result<async_nats::ConnectOptions> {
        let mut o = async_nats::ConnectOptions::new();
        if let Some(p) = &self.creds_file {
            o = o.credentials_file(p).await?;
        }
        if let Some(p) = &self.token_file {
            o = o.token(read_secret(p)?);
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password_file) {
            o = o.user_and_password(u.clone(), read_secret(p)?);
        }
        if let Some(p) = &self.nkey_file {
            o = o.nkey(read_secret(p)?);
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            o = o
                .add_client_certificate(c.clone(), k.clone())
                .require_tls(true);
        }
        Ok(o.name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(1))
            .ping_interval(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(50) * attempts.min(10) as u32).min(RECONNECT_MAX)
            }))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
