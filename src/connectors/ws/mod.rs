//! Upstream WebSocket servers: the one client framegate has for them. A route's `ws` sink (an
//! upstream per client connection, or a pass-through relay), and the `ws` source that feeds
//! routes (source.rs), connect through `Upstream`: request headers, cookies and sub-protocols on
//! the handshake, TLS with the system's roots or a CA bundle, a client certificate or no
//! verification at all (tls.rs), one timeout over TCP, TLS and the handshake, and
//! permessage-deflate offered to the server (src/deflate/) unless `deflate.enabled = false`.

mod outlet;
mod source;
mod tls;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::HeaderValue;
use http::header::{COOKIE, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::url::redact;
use super::{SinkKind, SourceKind, parse};
use crate::config::DeflateConfig;
use crate::deflate::{self, Deflating, Marked};
use crate::metrics::UpstreamCounters;
pub use outlet::{FeedMessage, Outlet};
pub use source::Runner;
pub use tls::client_config;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The feed: a ws:// or wss:// URL.
    pub url: String,
    /// Request headers of the handshake.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Sent as one `Cookie` header, in this order.
    #[serde(default)]
    pub cookies: Vec<Cookie>,
    /// Offered in `Sec-WebSocket-Protocol`.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Sent after every connect, reconnects included: subscriptions, auth tokens.
    #[serde(default)]
    pub init_messages: Vec<InitMessage>,
    /// The pause before the first reconnect; it doubles up to `retry_delay_max_ms`.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    #[serde(default = "default_retry_delay_max")]
    pub retry_delay_max_ms: u64,
    /// Failed attempts in a row after which the source gives up; 0 never does.
    #[serde(default)]
    pub max_retries: u32,
    /// The TCP, TLS and WebSocket handshake together; 10 s for a source, 5 s for a sink.
    pub connect_timeout_ms: Option<u64>,
    /// Ping the server this often; 0 never.
    #[serde(default = "default_ping")]
    pub ping_interval_ms: u64,
    /// Reconnect when nothing (no message, no pong) came for this long; 0 never.
    #[serde(default = "default_read_idle")]
    pub read_idle_timeout_ms: u64,
    /// Messages waiting for each fed route.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What a full queue does: `block` stops reading the socket; `drop_oldest` makes room.
    #[serde(default)]
    pub on_full: OnFull,
    #[serde(default = "default_max_message")]
    pub max_message_size: usize,
    #[serde(default)]
    pub tls: TlsOptions,
    /// permessage-deflate offered to the server (`server_*`: what the server is asked to do,
    /// `client_*`: what framegate does); not on pass-through routes, which relay their client's
    /// offer instead.
    #[serde(default)]
    pub deflate: DeflateConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cookie {
    pub name: String,
    pub value: String,
}

/// A text message as a string, or `{ text = "..." }`, or `{ binary_base64 = "..." }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum InitMessage {
    Text(String),
    Tagged(TaggedInit),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TaggedInit {
    Text(String),
    BinaryBase64(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    #[default]
    Block,
    DropOldest,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A PEM bundle of the CAs to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain and its key, for servers that ask for one (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name to send (SNI) and to check the certificate against, instead of the URL's host.
    pub server_name: Option<String>,
    /// Accept any certificate: for development only; logged loudly and shown in /readyz.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_retry_delay() -> u64 {
    1_000
}
fn default_retry_delay_max() -> u64 {
    30_000
}
fn default_ping() -> u64 {
    15_000
}
fn default_read_idle() -> u64 {
    45_000
}
fn default_queue() -> usize {
    1024
}
fn default_max_message() -> usize {
    16 << 20
}

impl Options {
    /// What serde cannot check: the URL, the numbers, the init messages, the TLS files.
    pub fn check(&self) -> Result<(), String> {
        let request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("url: {e}"))?;
        if !matches!(request.uri().scheme_str(), Some("ws" | "wss")) {
            return Err(format!("url: expected a ws:// or wss:// URL, got {:?}", self.url));
        }
        if self.queue == 0 || self.max_message_size == 0 || self.retry_delay_ms == 0 {
            return Err("queue, max_message_size and retry_delay_ms: expected at least 1".into());
        }
        if self.retry_delay_max_ms < self.retry_delay_ms {
            return Err("retry_delay_max_ms: expected at least retry_delay_ms".into());
        }
        for message in &self.init_messages {
            message.to_message()?;
        }
        self.request()?;
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return Err("tls: client_cert and client_key go together".into());
        }
        self.deflate
            .check()
            .map_err(|(key, expected)| format!("deflate.{key}: {expected}"))
    }

    /// The handshake request: the URL, the headers, the cookies and the sub-protocols.
    pub fn request(&self) -> Result<Request, String> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("url: {e}"))?;
        request.headers_mut().extend(self.extra_headers()?);
        Ok(request)
    }

    /// The headers the options add to a handshake: `headers`, `cookies`, `subprotocols`.
    pub fn extra_headers(&self) -> Result<http::HeaderMap, String> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            let name = http::HeaderName::try_from(name.as_str()).map_err(|e| format!("headers.{name}: {e}"))?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| format!("headers.{name}: {e}"))?;
            headers.append(name, value);
        }
        if !self.cookies.is_empty() {
            let line: Vec<String> = self.cookies.iter().map(|c| format!("{}={}", c.name, c.value)).collect();
            let value = HeaderValue::try_from(line.join("; ")).map_err(|e| format!("cookies: {e}"))?;
            headers.insert(COOKIE, value);
        }
        if !self.subprotocols.is_empty() {
            let value =
                HeaderValue::try_from(self.subprotocols.join(", ")).map_err(|e| format!("subprotocols: {e}"))?;
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        Ok(headers)
    }

    /// The pause before attempt `failures + 1`: doubling from `retry_delay_ms` to the ceiling,
    /// then between 80 % and 100 % of that, so many sources do not come back all at once.
    pub fn pause(&self, failures: u32) -> Duration {
        let full = self
            .retry_delay_ms
            .saturating_mul(1u64 << failures.min(20))
            .min(self.retry_delay_max_ms);
        let random = RandomState::new().build_hasher().finish();
        Duration::from_millis(full - full / 5 * (random % 1000) / 1000)
    }
}

impl InitMessage {
    pub fn to_message(&self) -> Result<Message, String> {
        Ok(match self {
            InitMessage::Text(text) | InitMessage::Tagged(TaggedInit::Text(text)) => Message::text(text.clone()),
            InitMessage::Tagged(TaggedInit::BinaryBase64(data)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("init_messages: bad base64: {e}"))?;
                Message::binary(bytes)
            }
        })
    }
}

/// Options only a `ws` source takes: a sink's upstream lives as long as its client connection
/// (or is relayed), so it has no queue, no reconnects and no keepalive of its own.
const FEED_ONLY: [&str; 9] = [
    "init_messages",
    "retry_delay_ms",
    "retry_delay_max_ms",
    "max_retries",
    "ping_interval_ms",
    "read_idle_timeout_ms",
    "queue",
    "on_full",
    "max_message_size",
];

/// A `ws` sink: a route's upstream.
pub fn sink(table: &toml::Table) -> Result<SinkKind, String> {
    if let Some(key) = table.keys().find(|k| FEED_ONLY.contains(&k.as_str())) {
        return Err(format!("{key}: only a ws source takes it"));
    }
    let upstream = Upstream::new(parse(table)?, Duration::from_secs(5))?;
    if upstream.options.tls.insecure_skip_verify {
        tracing::warn!(
            "the ws sink to {} does NOT verify TLS certificates (tls.insecure_skip_verify): for development only",
            upstream.shown_url()
        );
    }
    Ok(SinkKind::Upstream(Arc::new(upstream)))
}

/// A `ws` source: an upstream feed of routes.
pub fn source(table: &toml::Table) -> Result<SourceKind, String> {
    let upstream = Upstream::new(parse(table)?, Duration::from_secs(10))?;
    Ok(SourceKind::Feed(Arc::new(upstream)))
}

/// Buffer sizes that keep idle connections small and large messages whole: every WebSocket
/// framegate reads, client or upstream, uses them.
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// A WebSocket connection to an upstream, plain or TLS, compressed if the server agreed.
pub type UpstreamStream = Deflating<MaybeTlsStream<TcpStream>>;

/// An upstream server and how to reach it, checked and made ready once per loaded config (the
/// TLS configuration, with its CA bundle and client certificate read).
pub struct Upstream {
    pub options: Options,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
}

impl Upstream {
    pub fn new(options: Options, default_timeout: Duration) -> Result<Upstream, String> {
        options.check()?;
        let tls = match options.url.starts_with("wss://") {
            true => Some(tls::client_config(&options.tls)?),
            false => {
                // Checked even where unused, so that a bad file is found at load.
                tls::client_config(&options.tls)?;
                None
            }
        };
        Ok(Upstream {
            connect_timeout: options
                .connect_timeout_ms
                .map_or(default_timeout, Duration::from_millis),
            options,
            tls,
        })
    }

    /// The URL as logs and errors show it.
    pub fn shown_url(&self) -> String {
        redact(&self.options.url)
    }

    /// Connects TCP and, for `wss://`, TLS (no time limit: callers put theirs around it, with
    /// the handshake). Returns the stream and the request URI's host, port and path.
    pub async fn open(&self) -> Result<MaybeTlsStream<TcpStream>, String> {
        let request = self.options.request()?;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
        let port = uri.port_u16().unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            Some(config) => {
                let name = self.options.tls.server_name.as_deref().unwrap_or(&host);
                MaybeTlsStream::Rustls(tls::handshake(config.clone(), name, tcp, &self.options.tls).await?)
            }
            None => MaybeTlsStream::Plain(tcp),
        })
    }

    /// Connects, TLS and WebSocket handshake within the connect timeout; `counters` count the
    /// connection's bytes.
    pub async fn connect(&self, max_message_size: usize, counters: UpstreamCounters) -> Result<UpstreamStream, String> {
        let handshake = async {
            let mut request = self.options.request()?;
            let compression = &self.options.deflate;
            if compression.enabled {
                let offer = HeaderValue::try_from(deflate::offer(compression)).expect("an offer is a valid header");
                request.headers_mut().insert(SEC_WEBSOCKET_EXTENSIONS, offer);
            }
            let stream = Marked::client(self.open().await?, compression.enabled);
            let config = ws_config(deflate::compressed_limit(max_message_size));
            let secure = self.tls.is_some();
            let (stream, response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    WsError::Http(response) => format!("the server refused the upgrade with {}", response.status()),
                    // TLS 1.3 servers check a client certificate after the client's handshake is done.
                    WsError::Io(_) | WsError::Tls(_) if secure && self.options.tls.client_cert.is_none() => format!(
                        "WebSocket handshake failed: {e}; a server that wants a client certificate \
                         (tls.client_cert) closes like this"
                    ),
                    other => format!("WebSocket handshake failed: {other}"),
                })?;
            let answers = response.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
            let agreed = deflate::accepted(answers.iter().filter_map(|v| v.to_str().ok()), compression)
                .map_err(|e| e.to_string())?;
            let options = agreed.map(|agreed| deflate::Options::new(agreed, compression, max_message_size));
            Ok(Deflating::client(stream, options, max_message_size, counters))
        };
        let connected = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(connected) => connected,
            Err(_) => Err(format!("no handshake within {:?}", self.connect_timeout)),
        };
        connected.map_err(|e: String| format!("upstream {}: {e}", self.shown_url()))
    }
}
