//! RabbitMQ over AMQP 0-9-1 (lapin): the `amqp` sink, publishing with confirms (sink.rs), and
//! the queue consumer of the `amqp` source (source.rs), and what both need of the protocol.

mod sink;
mod source;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use super::url::redact;
use crate::types::Settle;
pub use sink::SinkOptions;
pub use source::SourceOptions;

fn default_url() -> String {
    "amqp://127.0.0.1:5672/%2f".into()
}

/// A connection to the broker at `url` and a channel on it.
async fn open_channel(url: &str) -> Result<(Connection, Channel), String> {
    let shown = redact(url);
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("amqp {shown}: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("amqp {shown}: open a channel: {e}"))?;
    Ok((connection, channel))
}

/// A name AMQP carries as a short string (at most 255 bytes).
fn short(what: &str, text: String) -> Result<ShortString, String> {
    ShortString::try_new(text).map_err(|e| format!("amqp {what}: {e}"))
}

/// Declares a durable queue, as the sink's `declare_queue` and the source's `declare` do.
async fn declare_durable(channel: &Channel, queue: &str) -> Result<(), String> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(short("queue", queue.into())?, options, FieldTable::default())
        .await
        .map(drop)
        .map_err(|e| format!("amqp declare queue {queue:?}: {e}"))
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let amqp = sink::Amqp::new(self, start.health());
            start.run(amqp).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}
