//! The configuration model: one TOML file, parsed, validated with errors that name the file,
//! the key and what was expected, and compared on reload. Knows nothing of sockets or Wasm, and
//! knows connectors by their kind's name only: their own options stay a table here, which the
//! connector registry (src/connectors/mod.rs) parses and checks once per load.

mod auth;
mod console;
mod deflate;
mod edge;
mod record;
mod route_path;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::MetaLimit;
pub use auth::{
    AuthConfig, ClaimRule, ClaimValue, ClientCertMode, ClientCertRule, JwtAlgorithm, JwtConfig, TokenSource,
};
pub use console::ConsoleConfig;
pub use deflate::{DeflateConfig, WINDOW_BITS};
pub use edge::{ClientIpConfig, EdgeLimits, MIN_HEAD_BYTES, OriginPattern, TrustedProxy};
pub use record::{ALWAYS_REDACTED, RecordConfig};

pub use route_path::{RoutePath, percent_decode_with};

/// The kind of the upstream WebSocket connector: a route's `ws` sink is its upstream, and a `ws`
/// source feeds routes rather than subscriptions.
pub const UPSTREAM_KIND: &str = "ws";

/// The built-in source every configuration has (the in-process bus).
pub const BUS_SOURCE: &str = "bus";

/// The configuration `framegate run` uses when no file is given: no broker needed.
/// The longest deadline a filter call may have: a call holds its connection (never the others)
/// until it returns.
pub const MAX_FILTER_TIMEOUT_MS: u64 = 10_000;

pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// A configuration error: where it is and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {key}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the config came from (a file name), for errors found after parsing it.
    #[serde(skip)]
    pub origin: String,
    /// The values that must never be printed (passwords in URLs, credentials, filled secrets):
    /// the log masks them wherever a library prints them.
    #[serde(skip)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub filters: FiltersConfig,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The WebSocket listener.
    pub listen: SocketAddr,
    /// The admin listener (health, readiness, metrics, loaded filters); none when absent.
    pub admin: Option<SocketAddr>,
    /// When set, every admin request must carry `Authorization: Bearer <this>` (best named as
    /// `${env:NAME}` or `${file:PATH}`).
    pub admin_token: Option<String>,
    /// Upgrades beyond this many open connections get 503.
    pub max_connections: usize,
    /// How long shutdown waits for sinks to flush.
    pub shutdown_grace_ms: u64,
    /// At shutdown, how long `/readyz` answers 503 while the listener still accepts.
    pub drain_delay_ms: u64,
    /// After the listener closed, how long live connections are served before they are told to go.
    pub drain_period_ms: u64,
    /// How long the 1001 closes of live connections are spread over.
    pub close_spread_ms: u64,
    /// Serve wss:// with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Threads serving connections; 0: one per core.
    pub workers: usize,
    /// The listener's guards: handshake deadline, head cap, per-IP caps (docs/configuration.md).
    pub limits: EdgeLimits,
    /// Whose word on a client's address is taken (X-Forwarded-For, PROXY protocol v2).
    pub client_ip: ClientIpConfig,
    /// The console on the admin listener and its live tap (src/server/console/).
    pub console: ConsoleConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin: Some(([127, 0, 0, 1], 9090).into()),
            admin_token: None,
            max_connections: 10_000,
            shutdown_grace_ms: 5_000,
            drain_delay_ms: 0,
            drain_period_ms: 0,
            close_spread_ms: 0,
            tls: None,
            workers: 0,
            limits: EdgeLimits::default(),
            client_ip: ClientIpConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are verified (mTLS); none: not asked.
    pub client_ca: Option<PathBuf>,
    /// Whether the TLS handshake needs a client certificate (with `client_ca`).
    #[serde(default)]
    pub client_cert: ClientCertMode,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    /// The folder holding `NAME.wasm` (or `NAME.wat`) modules; relative to the working directory.
    pub dir: PathBuf,
    /// Reload modules (and the config file) when they change.
    pub watch: bool,
    /// Idle instances kept per filter of a route.
    pub pool_size: usize,
    /// Instances the pooling allocator can hold at once, all filters together.
    pub max_instances: u32,
    /// The largest `memory_limit_mb` any filter may ask for.
    pub max_memory_mb: u64,
    /// Failed calls of one module within `breaker_window_ms` that open its circuit breaker:
    /// its routes then answer per `on_error` without calling it for `breaker_open_ms`. 0: never.
    pub breaker_failures: u32,
    pub breaker_window_ms: u64,
    pub breaker_open_ms: u64,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("target/filters"),
            watch: true,
            pool_size: 8,
            max_instances: 1000,
            max_memory_mb: 256,
            breaker_failures: 20,
            breaker_window_ms: 10_000,
            breaker_open_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The result comes when the peer confirmed the record.
    #[default]
    Confirmed,
    /// The result comes when the record is queued.
    FireAndForget,
}

/// A sink: the options every connector shares, and the connector's own ones.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub delivery: Delivery,
    /// Records waiting in the sink's queue before producers are slowed down.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Attempts after the first before a record is reported failed.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First pause between attempts; doubles each time.
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// The longest pause between attempts.
    #[serde(default = "default_backoff_max")]
    pub retry_backoff_max_ms: u64,
    /// Where failed records go, with the reason in a header.
    pub dead_letter: Option<String>,
    /// Each record's key, a template over its metadata (`{meta.query.device}`), in place of the
    /// key a filter gave it.
    pub key: Option<String>,
    /// Headers added to each record, each a template: `{ x-tenant = "{meta.path.tenant}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The connector's own options, checked by the connector.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// A broker source filters can subscribe connections to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SourceConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// The connector's own options, checked by the connector.
    #[serde(flatten)]
    pub options: toml::Table,
}

fn default_queue() -> usize {
    1024
}
fn default_retries() -> u32 {
    // With the default pauses, about half a minute: a broker restart is bridged.
    10
}
fn default_backoff() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    5_000
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A path template: literal segments and `{name}` captures. A route has a path (clients
    /// connect to it) or a feed, not both.
    #[serde(default)]
    pub path: Option<String>,
    /// A `ws` source whose messages enter the chain as a client's would: a route with no client.
    #[serde(default)]
    pub feed: Option<String>,
    #[serde(default)]
    pub filters: Vec<FilterRef>,
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Sinks that filters may `emit` to but that messages do not go to by themselves: a filter's
    /// dead-letter sink, say.
    #[serde(default)]
    pub emit_sinks: Vec<String>,
    /// Larger messages close the connection with 1009.
    #[serde(default = "default_max_message")]
    pub max_message_size: usize,
    /// Ping the client this often; 0 turns pings off.
    #[serde(default = "default_ping")]
    pub ping_interval_ms: u64,
    /// Close a connection that sent nothing (not even a pong) for this long; 0 never.
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// `frames` (messages through the chain) or `bytes` (a spliced pass-through to the route's
    /// `ws` sink: no filters, no frame parsed).
    #[serde(default)]
    pub relay: Relay,
    /// Origins whose pages may open connections here; an upgrade with another `Origin` gets 403.
    /// None: any origin.
    #[serde(default)]
    pub origins: Option<Vec<OriginPattern>>,
    /// Who may connect: a JWT, a client certificate (src/auth/).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Metadata keys filters may set on a connection (beside the host's).
    #[serde(default = "default_meta_keys")]
    pub max_meta_keys: usize,
    /// Bytes (names and values) of the metadata filters may set on a connection.
    #[serde(default = "default_meta_bytes")]
    pub max_meta_bytes: usize,
    /// Bytes of messages from subscriptions that may wait for one connection.
    #[serde(default = "default_backlog")]
    pub max_backlog_bytes: usize,
    /// Records a connection's filters emitted whose outcome has not come back yet, past which
    /// the client is not read until outcomes come: backpressure instead of failed answers.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// What one connection may send: messages and bytes per second.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// permessage-deflate (RFC 7692) with the route's clients.
    #[serde(default)]
    pub deflate: DeflateConfig,
    /// Write the route's sessions as replay files (docs/replay.md).
    #[serde(default)]
    pub record: Option<RecordConfig>,
}

/// A connection's token buckets: a rate and a burst (the bucket's size, the rate when absent),
/// for messages and for payload bytes, and what happens past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub messages_per_s: Option<NonZeroU64>,
    pub messages_burst: Option<NonZeroU64>,
    pub bytes_per_s: Option<NonZeroU64>,
    pub bytes_burst: Option<NonZeroU64>,
    #[serde(default)]
    pub action: RateAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateAction {
    /// Stop reading the connection until the buckets refill: TCP slows the client.
    #[default]
    Slow,
    /// Close the connection with 1008.
    Close,
}

impl RouteConfig {
    pub fn meta_limit(&self) -> MetaLimit {
        MetaLimit {
            keys: self.max_meta_keys,
            bytes: self.max_meta_bytes,
        }
    }
}

fn default_in_flight() -> usize {
    512
}

fn default_backlog() -> usize {
    4 << 20
}
fn default_meta_keys() -> usize {
    MetaLimit::default().keys
}
fn default_meta_bytes() -> usize {
    MetaLimit::default().bytes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Relay {
    #[default]
    Frames,
    Bytes,
}

fn default_max_message() -> usize {
    1 << 20
}
fn default_ping() -> u64 {
    30_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Close the connection with 1011.
    #[default]
    FailClosed,
    /// Skip the filter for that message.
    FailOpen,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRef {
    /// The module's name: the file stem in the filter folder.
    pub module: String,
    /// Handed to the filter's `fg_init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// A YAML, JSON or TOML file (relative to the config file) whose top-level keys the filter
    /// gets too, under `config` (whose keys win): a Blink schema file brought as is, say.
    pub config_file: Option<PathBuf>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_memory")]
    pub memory_limit_mb: u64,
}

fn default_timeout() -> u64 {
    50
}
fn default_memory() -> u64 {
    64
}

impl FilterRef {
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).expect("a TOML table is always valid JSON")
    }
}

impl Config {
    /// Whether a route passes through: no filters and a single `ws` sink, so no message needs
    /// reading (src/server/relay/).
    pub fn passes_through(&self, route: &RouteConfig) -> bool {
        let [sink] = route.sinks.as_slice() else {
            return false;
        };
        route.filters.is_empty() && self.sinks.get(sink).is_some_and(|s| s.kind == UPSTREAM_KIND)
    }

    /// An error at `key` of this config.
    pub fn error(&self, key: String, message: String) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key,
            message,
        }
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse_at(&text, &origin, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and validates a document; `origin` names it in errors. Files it names are
    /// relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::parse_at(text, origin, Path::new("."))
    }

    fn parse_at(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError {
            origin: origin.into(),
            key: "(syntax)".into(),
            message: e.to_string().trim_end().to_string(),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let mut filled = Vec::new();
        let mut config: Config = if text.contains("${") {
            // Secrets are filled in the parsed tree, so a value can never break the TOML around it.
            secrets::fill_table(&mut table, base, "", &mut filled).map_err(|(key, e)| ConfigError {
                origin: origin.into(),
                key,
                message: e.to_string(),
            })?;
            table.clone().try_into().map_err(syntax)?
        } else {
            // From the text, so that a mistake's message says where it is.
            toml::from_str(text).map_err(syntax)?
        };
        config.secrets = secrets::secrets_of(&table, filled);
        config.origin = origin.to_string();
        config.read_config_files(base, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Lays every filter's `config` over the keys of its `config_file`.
    fn read_config_files(&mut self, base: &Path, origin: &str) -> Result<(), ConfigError> {
        for (name, route) in &mut self.routes {
            for (i, filter) in route.filters.iter_mut().enumerate() {
                let Some(file) = &filter.config_file else { continue };
                let mut merged = read_table(&base.join(file)).map_err(|message| ConfigError {
                    origin: origin.into(),
                    key: format!("routes.{name}.filters[{i}].config_file"),
                    message,
                })?;
                merged.extend(std::mem::take(&mut filter.config));
                filter.config = merged;
            }
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: String, message: String| ConfigError {
            origin: origin.into(),
            key,
            message,
        };
        if self.server.max_connections == 0 {
            return Err(err("server.max_connections".into(), "expected at least 1".into()));
        }
        if let Err((key, message)) = self.server.limits.check() {
            return Err(err(format!("server.limits.{key}"), message));
        }
        if self.filters.pool_size == 0 {
            return Err(err("filters.pool_size".into(), "expected at least 1".into()));
        }
        for (name, sink) in &self.sinks {
            let key = |k: &str| format!("sinks.{name}.{k}");
            if sink.queue == 0 {
                return Err(err(key("queue"), "expected at least 1".into()));
            }
            if let Some(dead) = &sink.dead_letter
                && (dead == name || !self.sinks.contains_key(dead))
            {
                return Err(err(
                    key("dead_letter"),
                    format!("expected the name of another sink, got {dead:?}"),
                ));
            }
        }
        if self.sources.contains_key(BUS_SOURCE) {
            return Err(err(
                format!("sources.{BUS_SOURCE}"),
                "\"bus\" is the built-in source; pick another name".into(),
            ));
        }
        let mut paths = BTreeMap::new();
        for (name, route) in &self.routes {
            let key = |k: &str| format!("routes.{name}.{k}");
            match (&route.path, &route.feed) {
                (Some(text), None) => {
                    let path = RoutePath::parse(text).map_err(|m| err(key("path"), m))?;
                    if let Some(other) = paths.insert(path.shape(), name) {
                        return Err(err(
                            key("path"),
                            format!("{text:?} is already served by route {other:?}"),
                        ));
                    }
                }
                (None, Some(feed)) => {
                    if self.sources.get(feed).is_none_or(|s| s.kind != UPSTREAM_KIND) {
                        return Err(err(key("feed"), format!("no ws source named {feed:?} in [sources]")));
                    }
                    if route.relay == Relay::Bytes {
                        return Err(err(key("relay"), "a fed route has no client to relay bytes for".into()));
                    }
                    if route.auth != AuthConfig::default() {
                        return Err(err(key("auth"), "a fed route has no client to authenticate".into()));
                    }
                }
                _ => return Err(err(key("path"), "expected either a path or a feed".into())),
            }
            for (list, names) in [("sinks", &route.sinks), ("emit_sinks", &route.emit_sinks)] {
                for (i, sink) in names.iter().enumerate() {
                    let at = format!("routes.{name}.{list}[{i}]");
                    if !self.sinks.contains_key(sink) {
                        return Err(err(at, format!("no sink named {sink:?} in [sinks]")));
                    }
                    if list == "emit_sinks" && (route.sinks.contains(sink) || self.sinks[sink].kind == UPSTREAM_KIND) {
                        return Err(err(at, format!("{sink:?} is in sinks already, or a ws sink")));
                    }
                }
            }
            if route.relay == Relay::Bytes && !self.passes_through(route) {
                return Err(err(
                    key("relay"),
                    "\"bytes\" needs a route with no filters and a single ws sink".into(),
                ));
            }
            if let Some(jwt) = &route.auth.jwt {
                jwt.check()
                    .map_err(|(k, message)| err(key(&format!("auth.jwt.{k}")), message))?;
            }
            if route.auth.client_cert.is_some() && self.server.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                return Err(err(key("auth.client_cert"), "needs server.tls.client_ca".into()));
            }
            if route.auth.client_cert == Some(ClientCertRule::Sufficient) && route.auth.jwt.is_none() {
                return Err(err(
                    key("auth.client_cert"),
                    "\"sufficient\" lets a client in without a token: it needs auth.jwt".into(),
                ));
            }
            if route.max_message_size == 0 {
                return Err(err(key("max_message_size"), "expected at least 1".into()));
            }
            if route.max_in_flight == 0 {
                return Err(err(key("max_in_flight"), "expected at least 1".into()));
            }
            route
                .deflate
                .check()
                .map_err(|(k, message)| err(key(&format!("deflate.{k}")), message))?;
            if let Some(rate) = &route.rate_limit {
                let unpaired = [
                    (
                        "messages_burst",
                        rate.messages_burst.is_some() && rate.messages_per_s.is_none(),
                    ),
                    ("bytes_burst", rate.bytes_burst.is_some() && rate.bytes_per_s.is_none()),
                ];
                if let Some((burst, _)) = unpaired.iter().find(|(_, unpaired)| *unpaired) {
                    return Err(err(
                        key(&format!("rate_limit.{burst}")),
                        "a burst needs its rate".into(),
                    ));
                }
                if rate.messages_per_s.is_none() && rate.bytes_per_s.is_none() {
                    return Err(err(
                        key("rate_limit"),
                        "expected messages_per_s, bytes_per_s or both".into(),
                    ));
                }
            }
            for (i, filter) in route.filters.iter().enumerate() {
                let key = |k: &str| format!("routes.{name}.filters[{i}].{k}");
                if !is_module_name(&filter.module) {
                    return Err(err(
                        key("module"),
                        format!(
                            "expected a module name of letters, digits, '_' and '-', got {:?}",
                            filter.module
                        ),
                    ));
                }
                if !(1..=MAX_FILTER_TIMEOUT_MS).contains(&filter.timeout_ms) {
                    return Err(err(
                        key("timeout_ms"),
                        format!("expected 1 to {MAX_FILTER_TIMEOUT_MS} (a filter call holds its connection that long)"),
                    ));
                }
                if filter.memory_limit_mb == 0 || filter.memory_limit_mb > self.filters.max_memory_mb {
                    return Err(err(
                        key("memory_limit_mb"),
                        format!("expected 1 to {} (filters.max_memory_mb)", self.filters.max_memory_mb),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A YAML, JSON or TOML file's top-level mapping, as a TOML table (YAML nulls are left out).
fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let value: serde_json::Value = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => serde_norway::from_str(&text).map_err(|e| at(&e))?,
        Some("json") => serde_json::from_str(&text).map_err(|e| at(&e))?,
        Some("toml") => return toml::from_str(&text).map_err(|e| at(&e)),
        _ => {
            return Err(format!(
                "{}: expected a .yaml, .yml, .json or .toml file",
                path.display()
            ));
        }
    };
    match json_to_toml(value) {
        Some(toml::Value::Table(table)) => Ok(table),
        _ => Err(format!("{}: expected a mapping at the top", path.display())),
    }
}

fn json_to_toml(value: serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value;
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => toml::Value::String(s),
        Value::Array(items) => toml::Value::Array(items.into_iter().filter_map(json_to_toml).collect()),
        Value::Object(map) => toml::Value::Table(
            map.into_iter()
                .filter_map(|(k, v)| json_to_toml(v).map(|v| (k, v)))
                .collect(),
        ),
    })
}

/// A module name is a file stem: no path separators, nothing a shell would trip on.
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_rate_limit_needs_a_rate_above_zero() {
        let route = |limit: &str| format!("[routes.r]\npath = \"/r\"\nrate_limit = {limit}\n");
        assert_eq!(
            parse_err(&route("{}")),
            "test.toml: routes.r.rate_limit: expected messages_per_s, bytes_per_s or both"
        );
        assert_eq!(
            parse_err(&route("{ bytes_per_s = 10, messages_burst = 5 }")),
            "test.toml: routes.r.rate_limit.messages_burst: a burst needs its rate"
        );
        assert!(parse_err(&route("{ messages_per_s = 0 }")).contains("nonzero"));
        assert!(parse_err(&route("{ messages_per_s = 1, action = \"drop\" }")).contains("unknown variant"));
        let config = Config::parse(&route("{ messages_per_s = 5 }"), "test.toml").unwrap();
        assert_eq!(config.routes["r"].rate_limit.unwrap().action, RateAction::Slow);
    }

    #[test]
    fn default_config_is_valid() {
        let config = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert!(config.routes.contains_key("echo"));
        assert_eq!(config.routes["echo"].max_message_size, 16 << 20);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_err("[routes.a]\npath = \"/a\"\nfilterz = []\n");
        assert!(e.starts_with("test.toml: (syntax):"), "{e}");
        assert!(e.contains("unknown field `filterz`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn missing_sink_is_named() {
        let e = parse_err("[routes.a]\npath = \"/a\"\nsinks = [\"nope\"]\n");
        assert_eq!(e, "test.toml: routes.a.sinks[0]: no sink named \"nope\" in [sinks]");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse_err("[routes.a]\npath = \"a\"\n");
        assert!(
            e.starts_with("test.toml: routes.a.path: expected a path starting with '/'"),
            "{e}"
        );
        let e = parse_err("[routes.a]\npath = \"/a\"\nfilters = [{ module = \"../x\" }]\n");
        assert!(e.starts_with("test.toml: routes.a.filters[0].module:"), "{e}");
        let e = parse_err("[routes.a]\npath = \"/{x}\"\n[routes.b]\npath = \"/{y}\"\n");
        assert!(e.contains("already served by route \"a\""), "{e}");
    }

    #[test]
    fn auth_options_are_checked_with_their_key() {
        let e = parse_err("[routes.a]\npath = \"/a\"\n[routes.a.auth.jwt]\nalgorithms = [\"RS256\"]\n");
        assert_eq!(
            e,
            "test.toml: routes.a.auth.jwt.key_file: expected exactly one of key_file, secret_file, jwks_url"
        );
        let e = parse_err("[routes.a]\npath = \"/a\"\nauth = { client_cert = \"required\" }\n");
        assert_eq!(e, "test.toml: routes.a.auth.client_cert: needs server.tls.client_ca");
        let tls = "[server]\ntls = { cert = \"c\", key = \"k\", client_ca = \"ca\" }\n";
        let e = parse_err(&format!(
            "{tls}[routes.a]\npath = \"/a\"\nauth = {{ client_cert = \"sufficient\" }}\n"
        ));
        assert!(e.contains("routes.a.auth.client_cert: \"sufficient\""), "{e}");
        assert!(
            Config::parse(
                &format!("{tls}[routes.a]\npath = \"/a\"\nauth = {{ client_cert = \"required\" }}\n"),
                "t"
            )
            .is_ok()
        );
        let e = parse_err(concat!(
            "[sources.s]\ntype = \"ws\"\nurl = \"ws://x\"\n[routes.a]\nfeed = \"s\"\n",
            "auth = { client_cert = \"required\" }\n"
        ));
        assert_eq!(e, "test.toml: routes.a.auth: a fed route has no client to authenticate");
    }
}
