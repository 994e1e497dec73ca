//! The `ws` sink: each client connection gets its own connection to an upstream WebSocket
//! server; client messages go up after the chain, upstream messages come down through it.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::filter::abi::Opcode;
use crate::source::Delivered;

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

type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type UpstreamWriter = SplitSink<Upstream, Message>;

/// Connects to the upstream server; its messages flow into `out` as deliveries of `name`.
pub async fn connect(
    name: Arc<str>,
    options: &Options,
    max_message_size: usize,
    out: mpsc::Sender<Delivered>,
) -> Result<(UpstreamWriter, tokio::task::JoinHandle<()>), String> {
    let config = super::super::session::ws_config(max_message_size);
    let connecting = tokio_tungstenite::connect_async_with_config(&options.url, Some(config), true);
    let timeout = std::time::Duration::from_millis(options.connect_timeout_ms);
    let (stream, _) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| format!("upstream {} did not answer within {timeout:?}", options.url))?
        .map_err(|e| format!("upstream {}: {e}", options.url))?;
    let (writer, reader) = stream.split();
    let task = tokio::spawn(relay_down(name, reader, out));
    Ok((writer, task))
}

/// Upstream messages towards the session; ends (dropping `out`) when the upstream closes.
async fn relay_down(name: Arc<str>, mut reader: SplitStream<Upstream>, out: mpsc::Sender<Delivered>) {
    let mut seq = 0u64;
    while let Some(message) = reader.next().await {
        let (opcode, payload) = match message {
            Ok(Message::Text(text)) => (Opcode::Text, text.into()),
            Ok(Message::Binary(bytes)) => (Opcode::Binary, bytes),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        seq += 1;
        let delivered = Delivered {
            sub: None,
            source: name.clone(),
            id: seq.to_string(),
            opcode,
            payload,
        };
        if out.send(delivered).await.is_err() {
            break;
        }
    }
}
