//! The `ws` sink: each client connection gets its own connection to an upstream WebSocket
//! server; client messages go up after the chain, upstream messages come down through it.

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// ws:// or wss:// URL of the upstream server.
    pub url: String,
    /// Give up connecting after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout() -> u64 {
    5_000
}

impl Options {
    pub fn check(self) -> Result<(), String> {
        if self.url.starts_with("ws://") || self.url.starts_with("wss://") {
            Ok(())
        } else {
            Err(format!("url: expected a ws:// or wss:// URL, got {:?}", self.url))
        }
    }
}

pub type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to the upstream server; the session reads and writes it.
pub async fn connect(options: &Options, max_message_size: usize) -> Result<Upstream, String> {
    let config = crate::session::ws_config(max_message_size);
    let connecting = tokio_tungstenite::connect_async_with_config(&options.url, Some(config), true);
    let timeout = std::time::Duration::from_millis(options.connect_timeout_ms);
    let (stream, _) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| format!("upstream {} did not answer within {timeout:?}", options.url))?
        .map_err(|e| format!("upstream {}: {e}", options.url))?;
    Ok(stream)
}
