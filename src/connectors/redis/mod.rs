//! Redis streams: the `redis` sink (XADD, sink.rs) and the consumer-group source (XREADGROUP,
//! source.rs), over one connection manager each way, made here.

mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use super::url::redact;
use crate::types::Settle;
pub use sink::SinkOptions;

fn default_url() -> String {
    "redis://127.0.0.1:6379".into()
}

/// A connection manager (it reconnects by itself after the server went away) that waits at
/// most `reply_time` for an answer.
async fn connect(url: &str, reply_time: Duration) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis {}: {e}", redact(url)))?;
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(reply_time));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("redis {}: {e}", redact(url)))
}

/// The `redis` source's options: the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    #[serde(default = "default_url")]
    pub url: String,
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let redis = sink::Redis::new(self, start.health());
            start.run(redis).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}
