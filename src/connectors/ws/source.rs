//! The `ws` source: framegate as the client of someone else's WebSocket feed. One connection
//! per source, kept up for as long as a route is fed by it: init messages after every connect,
//! reconnects with a growing and jittered pause, pings and a read-idle deadline that catch a
//! half-open socket. Every text or binary message goes to the outlets of the routes it feeds
//! (src/feed.rs), with its metadata; a full outlet stops the reading, so TCP slows the server
//! down, unless the source drops the oldest.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{FeedMessage, Outlet, Upstream, UpstreamStream};
use crate::health::PartHealth;
use crate::metrics::FeedMetrics;

/// What the runner needs besides its options.
pub struct Runner {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// The outlets of the routes it feeds; the proxy swaps the list on a reload.
    pub outlets: Arc<ArcSwap<Vec<Arc<Outlet>>>>,
    pub health: PartHealth,
    pub metrics: FeedMetrics,
    pub stop: CancellationToken,
}

impl Runner {
    /// Keeps the feed connected until `stop`, or until `max_retries` attempts in a row failed.
    pub async fn run(self) {
        let options = &self.upstream.options;
        if options.tls.insecure_skip_verify {
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
                connected = self.upstream.connect(options.max_message_size, self.metrics.upstream.clone()) => connected,
            };
            match connecting {
                Ok(stream) => {
                    generation += 1;
                    failures = 0;
                    self.health.up();
                    self.metrics.connected.set(1);
                    tracing::info!(
                        source = &*self.name,
                        generation,
                        "connected to {}",
                        self.upstream.shown_url()
                    );
                    let ended = self.serve(stream, generation).await;
                    self.metrics.connected.set(0);
                    let Some(reason) = ended else { return };
                    tracing::warn!(source = &*self.name, generation, "{reason}; reconnecting");
                    self.health.down(&reason);
                }
                Err(reason) => {
                    failures += 1;
                    tracing::warn!(source = &*self.name, attempt = failures, "{reason}");
                    self.health.down(&reason);
                    if options.max_retries > 0 && failures > options.max_retries {
                        let reason = format!("gave up after {failures} failed attempts; last: {reason}");
                        tracing::error!(source = &*self.name, "{reason}");
                        return self.health.down(&reason);
                    }
                }
            }
            self.metrics.reconnects.inc();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(options.pause(failures.saturating_sub(1))) => {}
            }
        }
    }

    /// Reads one connection until it ends; `None` when told to stop, else why it ended.
    async fn serve(&self, mut stream: UpstreamStream, generation: u64) -> Option<String> {
        let options = &self.upstream.options;
        for message in &options.init_messages {
            let message = message.to_message().expect("checked with the config");
            if let Err(e) = stream.send(message).await {
                return Some(format!("sending an init message failed: {e}"));
            }
        }
        let every = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let mut ping =
            every(options.ping_interval_ms).map(|period| tokio::time::interval_at(Instant::now() + period, period));
        let idle_limit = every(options.read_idle_timeout_ms);
        let idle = tokio::time::sleep(idle_limit.unwrap_or(Duration::MAX / 4));
        tokio::pin!(idle);
        let mut seq = 0u64;
        let generation_text = Bytes::from(generation.to_string());
        let (name, url) = (
            Bytes::from(self.name.to_string()),
            Bytes::from(self.upstream.shown_url()),
        );
        let ended = loop {
            let read = tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = stream.close().await;
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
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
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
            paused += outlet
                .push(message.clone(), self.upstream.options.on_full, &self.stop)
                .await;
        }
        paused + last.push(message, self.upstream.options.on_full, &self.stop).await
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}
