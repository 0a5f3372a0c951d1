//! Layer 1: relay.toml → a validated [`Config`].
//!
//! Parsing is pure ([`Config::from_toml_str`] with an injected environment);
//! [`Config::load`] adds the file read and the process environment. Every
//! problem in the file is reported at once, each with its dotted key, and no
//! message ever contains a secret's value.

mod duration;
mod interp;
pub mod jq;
mod limits;
mod mapping;
pub mod pg_url;
mod rate;
mod reader;
pub mod routing;
mod storage;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use duration::{format_duration, parse_duration};
pub use jq::{CompileError, JqProgram};
pub use limits::{ListenerLimits, MAX_CONNECTIONS_LIMIT};
pub use mapping::{MappingConfig, Naming, UserIdRule};
pub use rate::{RateLimit, parse_rate_limit};
pub use reader::Problem;
use reader::{Problems, Reader};
pub use routing::Routing;
pub use storage::{
    Backend, DEFAULT_POOL_SIZE, PostgresConfig, StorageConfig, check_postgres_url, masked_url,
};

/// Segment's Webhooks destination allows five URLs per source; so do we.
pub const MAX_DESTINATIONS_PER_SOURCE: usize = 5;

/// A secret from relay.toml. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for signing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole of relay.toml, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`: listeners and storage.
    pub server: ServerConfig,
    /// `[storage]`: the queue's backend.
    pub storage: StorageConfig,
    /// `[retry]`: the delivery retry window.
    pub retry: RetryConfig,
    /// `[mapping]`: event naming and identity.
    pub mapping: MappingConfig,
    /// `[sources.NAME]`, by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[destinations.NAME]`, by name.
    pub destinations: BTreeMap<String, DestinationConfig>,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Public listener for webhook ingest.
    pub listen: SocketAddr,
    /// Private listener for metrics, health and dead letters.
    pub admin_listen: SocketAddr,
    /// Bearer token required on `/admin/*` when set.
    pub admin_token: Option<Secret>,
    /// Directory of the embedded store: the write-ahead log, dedup ids and
    /// the sled index.
    pub data_dir: PathBuf,
    /// Larger bodies are refused with 413.
    pub max_body_bytes: u64,
    /// Free disk below which webhooks are refused with 503; retries and dead
    /// letters keep half of it (sled must never meet a full disk: it hangs or
    /// stays failed).
    pub min_free_bytes: u64,
    /// How long a webhook id is remembered for duplicate detection (≥ 72 h:
    /// Shopify retries for up to 48 h on the classic schedule).
    pub dedup_window: Duration,
    /// What the public listener lets unauthenticated traffic hold.
    pub limits: ListenerLimits,
}

/// `[server]`'s defaults, and the shortest `dedup_window` accepted.
impl ServerConfig {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
    pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
    pub const DEFAULT_DATA_DIR: &str = "./data";
    /// 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
    /// 256 MiB.
    pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;
    /// 72 h, the default and the least: Shopify redelivers for up to 48 hours.
    pub const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(72 * 3600);
}

/// `[retry]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Give up (dead letter) this long after the first attempt.
    pub max_age: Duration,
    /// Delay before the first retry; doubles per attempt.
    pub initial_interval: Duration,
    /// Upper bound of one delay.
    pub max_interval: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_age: Duration::from_secs(4 * 3600),
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(600),
        }
    }
}

/// How a source's destinations share an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Each destination gets every event on its own schedule.
    Fanout,
    /// In order; stop at the first 2xx; retry the set if none succeeds.
    FirstSuccess,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Fanout => "fanout",
            DeliveryMode::FirstSuccess => "first-success",
        }
    }
}

/// Which sender a source receives from; decides headers, signature and URL shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Shopify: `POST /webhooks/shopify/{source}`, topic in `X-Shopify-Topic`.
    Shopify,
    /// convertedin: `POST /webhooks/convertedin/{source}/{resource}/{action}`.
    Convertedin,
}

impl SourceKind {
    /// The lowercase name used in relay.toml, URLs and `context.source.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Shopify => "shopify",
            SourceKind::Convertedin => "convertedin",
        }
    }
}

/// `[sources.NAME]`.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Which sender this source receives from.
    pub kind: SourceKind,
    /// HMAC keys; any one verifying is enough (rotation).
    pub secrets: Vec<Secret>,
    /// Destination names, in order (the order matters for first-success).
    pub destinations: Vec<String>,
    /// Fan-out or first-success.
    pub delivery: DeliveryMode,
}

/// What a destination receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One event per POST, `X-Signature` over the body.
    Webhook,
    /// A JSON array per POST, `X-Signature` over the first event.
    WebhookBatch,
    /// Segment HTTP tracking API `{"batch":[..],"sentAt":..}` with Basic auth.
    SegmentApi,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Webhook => "webhook",
            Format::WebhookBatch => "webhook-batch",
            Format::SegmentApi => "segment-api",
        }
    }
}

/// `[destinations.NAME]`.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Where events are POSTed (http or https).
    pub url: url::Url,
    /// Body shape and signing.
    pub format: Format,
    /// HMAC-SHA1 key for `X-Signature`; unsigned when absent.
    pub shared_secret: Option<Secret>,
    /// Segment write key (segment-api): `Authorization: Basic base64(key:)`.
    pub write_key: Option<Secret>,
    /// Per-request timeout; a timeout is retried.
    pub timeout: Duration,
    /// Extra request headers, in file order.
    pub headers: Vec<(String, Secret)>,
    /// Only these event names or call types (`track`, `identify`, `delete`); all when None.
    pub events: Option<Vec<String>>,
    /// Requests in flight at once to this destination.
    pub concurrency: usize,
    /// Events per request for the batch formats.
    pub batch_size: usize,
    /// How long a batch format waits for more events before sending a partial batch.
    pub linger: Duration,
    /// jq: an event is sent only when this yields true (after `events`).
    pub filter: Option<JqProgram>,
    /// jq: its one output object replaces the event (after `filter`).
    pub transform: Option<JqProgram>,
    /// Requests per second (minute) to this destination from this relay.
    pub rate_limit: Option<RateLimit>,
}

/// `[destinations.NAME]`'s defaults and bounds.
impl DestinationConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_CONCURRENCY: usize = 8;
    pub const MAX_CONCURRENCY: usize = 256;
    pub const DEFAULT_BATCH_SIZE: usize = 100;
    /// `webhook-batch`'s largest batch.
    pub const MAX_BATCH_SIZE: usize = 1000;
    /// `segment-api`'s largest batch (Segment's own limit).
    pub const MAX_SEGMENT_API_BATCH_SIZE: usize = 500;
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(50);
}

/// relay.toml could not be used; every problem is listed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Reads and validates the file, interpolating from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml_str(&text, &|name| std::env::var(name).ok())
    }

    /// What is valid but unsafe: `check` prints these, `serve` logs them.
    pub fn warnings(&self) -> Vec<Problem> {
        let s = &self.server;
        let mut w = Vec::new();
        if !s.admin_listen.ip().is_loopback() && s.admin_token.is_none() {
            w.push(Problem {
                key: "server.admin_listen".into(),
                reason: format!(
                    "{} is not a loopback address and no admin_token is set: whoever can \
                     reach it can read webhook bodies and replay or purge dead letters",
                    s.admin_listen
                ),
            });
        }
        w
    }

    /// Parses and validates relay.toml text; `env` resolves `${VAR}`.
    pub fn from_toml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                })
                .unwrap_or_else(|| "relay.toml".into());
            ConfigError::Invalid(vec![Problem {
                key: at,
                reason: format!("not valid TOML: {msg}"),
            }])
        })?;
        let problems = Problems::default();
        let root = Reader::new("", &table, &problems, env);
        let cfg = build::config(&root);
        root.finish();
        let problems = problems.into_vec();
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

mod build;
