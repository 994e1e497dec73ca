//! Kafka (librdkafka through rdkafka): the idempotent producer of the `kafka` sink (sink.rs)
//! and the consumer-group member of the `kafka` source (source.rs).

mod sink;
mod source;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use crate::types::Settle;
pub use sink::SinkOptions;
pub use source::SourceOptions;

/// The bootstrap brokers when none are named.
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let kafka = sink::Kafka::new(self, start.health());
            start.run(kafka).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}
