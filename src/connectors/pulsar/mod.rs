//! Apache Pulsar (pulsar-rs): the `pulsar` sink (sink.rs) and source (source.rs), the client
//! both connect with, and message ids in the text form of Pulsar's WebSocket API (id.rs).

pub mod id;
mod sink;
mod source;

use std::sync::Arc;
use std::time::Duration;

use ::pulsar::{ConnectionRetryOptions, OperationRetryOptions, Pulsar as Client, TokioExecutor};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use super::url::redact;
use crate::types::Settle;
pub use sink::SinkOptions;
pub use source::SourceOptions;

fn default_url() -> String {
    "pulsar://127.0.0.1:6650".into()
}

/// A client for `url` that gives up within about `timeout`: the runner's retries (or the
/// subscription's end) take it from there, rather than pulsar-rs retrying for minutes.
async fn connect(url: &str, timeout: Duration) -> Result<Client<TokioExecutor>, String> {
    let connection = ConnectionRetryOptions {
        max_retries: 3,
        max_backoff: Duration::from_secs(1),
        connection_timeout: timeout,
        ..Default::default()
    };
    let operation = OperationRetryOptions {
        operation_timeout: timeout,
        retry_delay: Duration::from_millis(500),
        max_retries: Some(4),
    };
    Client::builder(url, TokioExecutor)
        .with_connection_retry_options(connection)
        .with_operation_retry_options(operation)
        .build()
        .await
        .map_err(|e| format!("pulsar {}: {e}", redact(url)))
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let pulsar = sink::Pulsar::new(self, start.health());
            start.run(pulsar).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}
