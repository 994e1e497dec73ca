//! NATS and JetStream: the `nats` and `jetstream` sinks (sink.rs), the core NATS source
//! (source.rs) and the JetStream source (jetstream.rs), over one async-nats client.

mod jetstream;
mod sink;
mod source;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use super::url::redact;
use super::{SinkKind, parse};
use crate::types::Settle;
pub use sink::SinkOptions;

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}

/// A client of the server, which reconnects by itself (also when it is down at the start).
async fn connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| format!("nats {}: {e}", redact(url)))
}

/// The `nats` source's options: the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    #[serde(default = "default_url")]
    pub url: String,
}

/// The `jetstream` source's options: the same as the `nats` source's.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct JetstreamOptions(SourceOptions);

/// A `jetstream` sink: the `nats` sink's options, publishing to a stream.
pub fn jetstream_sink(options: &toml::Table) -> Result<SinkKind, String> {
    let options = SinkOptions {
        jetstream: true,
        ..parse(options)?
    };
    Ok(SinkKind::Queued(Arc::new(options)))
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let nats = sink::Nats::new(self, start.health());
            start.run(nats).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}

impl SourceConnector for JetstreamOptions {
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(jetstream::run(self, spec, feed, verdicts))
    }
}

/// What a NATS message tells a filter: `msg.topic` (the subject), `msg.key` (header `key`, as
/// framegate's NATS sinks write it) and `msg.header.NAME`.
fn attrs(subject: &str, headers: Option<&async_nats::HeaderMap>) -> Vec<(String, Bytes)> {
    let mut attrs = vec![("topic".to_string(), Bytes::copy_from_slice(subject.as_bytes()))];
    for (name, values) in headers.iter().flat_map(|h| h.iter()) {
        for value in values {
            let value = Bytes::copy_from_slice(value.as_str().as_bytes());
            if name.as_ref() as &str == "key" {
                attrs.push(("key".to_string(), value));
            } else {
                attrs.push((format!("header.{name}"), value));
            }
        }
    }
    attrs
}
