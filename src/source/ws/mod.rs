//! The `ws` source: framegate as the client of someone else's WebSocket feed. One connection
//! per source, kept up for as long as a route is fed by it: request headers, cookies and
//! sub-protocols on the handshake, init messages after every connect, TLS with a CA bundle, a
//! client certificate or no verification at all, reconnects with a growing and jittered pause,
//! pings and a read-idle deadline that catch a half-open socket. Every text or binary message
//! goes to the outlets of the routes it feeds (src/feed.rs), with its metadata; a full outlet
//! stops the reading, so TCP slows the server down, unless the source drops the oldest.

mod tls;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::{COOKIE, SEC_WEBSOCKET_PROTOCOL};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::feed::{FeedMessage, Outlet};
use crate::health::PartHealth;
use crate::metrics::FeedMetrics;

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
    /// The TCP, TLS and WebSocket handshake together.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
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
fn default_connect_timeout() -> u64 {
    10_000
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
        tls::client_config(&self.tls).map(drop)
    }

    /// The handshake request: the URL, the headers, the cookies and the sub-protocols.
    fn request(&self) -> Result<Request, String> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("url: {e}"))?;
        let headers = request.headers_mut();
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
        Ok(request)
    }

    /// The pause before attempt `failures + 1`: doubling from `retry_delay_ms` to the ceiling,
    /// then between 80 % and 100 % of that, so many sources do not come back all at once.
    fn pause(&self, failures: u32) -> Duration {
        let full = self
            .retry_delay_ms
            .saturating_mul(1u64 << failures.min(20))
            .min(self.retry_delay_max_ms);
        let random = RandomState::new().build_hasher().finish();
        Duration::from_millis(full - full / 5 * (random % 1000) / 1000)
    }
}

impl InitMessage {
    fn to_message(&self) -> Result<Message, String> {
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

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects, TLS and handshake within `connect_timeout_ms`.
async fn connect(options: &Options, tls: &Option<Arc<rustls::ClientConfig>>) -> Result<Stream, String> {
    let request = options.request()?;
    let uri = request.uri().clone();
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let secure = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let config = crate::session::ws_config(options.max_message_size);
    let handshake = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            Some(tls) => {
                let name = options.tls.server_name.as_deref().unwrap_or(&host);
                MaybeTlsStream::Rustls(tls::handshake(tls.clone(), name, tcp, &options.tls).await?)
            }
            None => MaybeTlsStream::Plain(tcp),
        };
        let (stream, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| match e {
                WsError::Http(response) => format!("the server refused the upgrade with {}", response.status()),
                // TLS 1.3 servers check a client certificate after the client's handshake is done.
                WsError::Io(_) | WsError::Tls(_) if secure && options.tls.client_cert.is_none() => format!(
                    "WebSocket handshake failed: {e}; a server that wants a client certificate \
                     (tls.client_cert) closes like this"
                ),
                other => format!("WebSocket handshake failed: {other}"),
            })?;
        Ok(stream)
    };
    let timeout = Duration::from_millis(options.connect_timeout_ms);
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| format!("no handshake within {timeout:?}"))?
}

/// What the runner needs besides its options.
pub struct Runner {
    pub name: Arc<str>,
    pub options: Arc<Options>,
    /// The outlets of the routes it feeds; the proxy swaps the list on a reload.
    pub outlets: Arc<ArcSwap<Vec<Arc<Outlet>>>>,
    pub health: PartHealth,
    pub metrics: FeedMetrics,
    pub stop: CancellationToken,
}

impl Runner {
    /// Keeps the feed connected until `stop`, or until `max_retries` attempts in a row failed.
    pub async fn run(self) {
        let tls = match self.options.url.starts_with("wss://") {
            true => match tls::client_config(&self.options.tls) {
                Ok(config) => Some(config),
                Err(reason) => return self.health.down(&reason),
            },
            false => None,
        };
        if self.options.tls.insecure_skip_verify {
            tracing::warn!(
                source = &*self.name,
                "TLS certificates are NOT verified (tls.insecure_skip_verify): for development only"
            );
            self.health
                .warn("TLS certificates are not verified (tls.insecure_skip_verify)");
        }
        let mut generation = 0u64;
        let mut failures = 0u32;
        loop {
            let connecting = tokio::select! {
                () = self.stop.cancelled() => return,
                connected = connect(&self.options, &tls) => connected,
            };
            match connecting {
                Ok(stream) => {
                    generation += 1;
                    failures = 0;
                    self.health.up();
                    self.metrics.connected.set(1);
                    tracing::info!(source = &*self.name, generation, "connected to {}", self.options.url);
                    let ended = self.serve(stream, generation).await;
                    self.metrics.connected.set(0);
                    let Some(reason) = ended else { return };
                    tracing::warn!(source = &*self.name, generation, "{reason}; reconnecting");
                    self.health.down(&reason);
                }
                Err(reason) => {
                    failures += 1;
                    tracing::warn!(
                        source = &*self.name,
                        attempt = failures,
                        "{}: {reason}",
                        self.options.url
                    );
                    self.health.down(&reason);
                    if self.options.max_retries > 0 && failures > self.options.max_retries {
                        let reason = format!("gave up after {failures} failed attempts; last: {reason}");
                        tracing::error!(source = &*self.name, "{reason}");
                        return self.health.down(&reason);
                    }
                }
            }
            self.metrics.reconnects.inc();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(self.options.pause(failures.saturating_sub(1))) => {}
            }
        }
    }

    /// Reads one connection until it ends; `None` when told to stop, else why it ended.
    async fn serve(&self, mut stream: Stream, generation: u64) -> Option<String> {
        for message in &self.options.init_messages {
            let message = message.to_message().expect("checked with the config");
            if let Err(e) = stream.send(message).await {
                return Some(format!("sending an init message failed: {e}"));
            }
        }
        let every = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let mut ping = every(self.options.ping_interval_ms)
            .map(|period| tokio::time::interval_at(Instant::now() + period, period));
        let idle_limit = every(self.options.read_idle_timeout_ms);
        let idle = tokio::time::sleep(idle_limit.unwrap_or(Duration::MAX / 4));
        tokio::pin!(idle);
        let mut seq = 0u64;
        let generation_text = Bytes::from(generation.to_string());
        let (name, url) = (
            Bytes::from(self.name.to_string()),
            Bytes::from(self.options.url.clone()),
        );
        let ended = loop {
            let read = tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = stream.close(None).await;
                    return None;
                }
                _ = async { ping.as_mut().unwrap().tick().await }, if ping.is_some() => {
                    if let Err(e) = stream.send(Message::Ping(Bytes::new())).await {
                        break format!("ping failed: {e}");
                    }
                    continue;
                }
                () = &mut idle, if idle_limit.is_some() => {
                    break format!("nothing read for {:?} (no message, no pong): a half-open connection", idle_limit.unwrap());
                }
                read = stream.next() => read,
            };
            let (text, payload) = match read {
                Some(Ok(Message::Text(text))) => (true, Bytes::from(text)),
                Some(Ok(Message::Binary(bytes))) => (false, bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    if let Some(limit) = idle_limit {
                        idle.as_mut().reset(Instant::now() + limit);
                    }
                    continue;
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(frame) => format!(
                            "the server closed with {} {:?}",
                            u16::from(frame.code),
                            frame.reason.as_str()
                        ),
                        None => "the server closed without a code".to_string(),
                    };
                }
                Some(Err(e)) => break format!("read failed: {e}"),
                None => break "the connection ended".to_string(),
            };
            seq += 1;
            self.metrics.messages.inc();
            self.metrics.bytes.inc_by(payload.len() as u64);
            let message = FeedMessage {
                text,
                payload,
                meta: vec![
                    ("source.name".into(), name.clone()),
                    ("source.url".into(), url.clone()),
                    ("source.received_at".into(), Bytes::from(now_ms().to_string())),
                    ("source.generation".into(), generation_text.clone()),
                    ("source.seq".into(), Bytes::from(seq.to_string())),
                ],
            };
            let paused = self.hand_on(message).await;
            if !paused.is_zero() {
                self.metrics.paused_seconds.inc_by(paused.as_secs_f64());
            }
            if let Some(limit) = idle_limit {
                idle.as_mut().reset(Instant::now() + limit);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.close(None)).await;
        Some(ended)
    }

    /// Gives a message to every outlet; the time spent waiting for room is returned.
    async fn hand_on(&self, message: FeedMessage) -> Duration {
        let outlets = self.outlets.load();
        let Some((last, others)) = outlets.split_last() else {
            return Duration::ZERO;
        };
        let mut paused = Duration::ZERO;
        for outlet in others {
            paused += outlet.push(message.clone(), self.options.on_full, &self.stop).await;
        }
        paused + last.push(message, self.options.on_full, &self.stop).await
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}
