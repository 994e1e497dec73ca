//! The `jetstream` source: a durable pull consumer on a JetStream stream (async-nats). Spec: a
//! subject, or `{"subject", "stream", "durable", "deliver": "all"|"new"|"last", "ack_wait_ms",
//! "max_deliver", "max_ack_pending"}`. The stream is found by subject when not named. The id
//! of a message is its stream sequence; ack acknowledges it, nack asks for it again at once, and
//! an unacked message comes again after `ack_wait_ms`, as JetStream does (also to the next
//! connection using the same durable name). A lost server is reconnected by the client; the
//! pull starts again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{JetstreamOptions, attrs, connect};
use crate::connectors::sources::{Feed, parse_spec};
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    subject: String,
    stream: Option<String>,
    /// Durable consumer name: progress survives the connection. None: one of its own.
    durable: Option<String>,
    #[serde(default)]
    deliver: Start,
    #[serde(default = "default_ack_wait")]
    ack_wait_ms: u64,
    #[serde(default = "default_max_deliver")]
    max_deliver: i64,
    #[serde(default = "default_max_ack_pending")]
    max_ack_pending: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Start {
    #[default]
    All,
    New,
    Last,
}

fn default_ack_wait() -> u64 {
    30_000
}
fn default_max_deliver() -> i64 {
    -1
}
fn default_max_ack_pending() -> i64 {
    1000
}

/// Pause before pulling again after an error.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(
    options: Arc<JetstreamOptions>,
    spec: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "subject")?;
    let client = connect(&options.0.url).await?;
    let context = jetstream::new(client.clone());
    let stream_name = match &spec.stream {
        Some(stream) => stream.clone(),
        None => context
            .stream_by_subject(spec.subject.clone())
            .await
            .map_err(|e| format!("no JetStream stream holds subject {:?}: {e}", spec.subject))?,
    };
    let stream = context
        .get_stream(&stream_name)
        .await
        .map_err(|e| format!("JetStream stream {stream_name:?}: {e}"))?;
    let config = pull::Config {
        durable_name: spec.durable.clone(),
        filter_subject: spec.subject.clone(),
        deliver_policy: match spec.deliver {
            Start::All => jetstream::consumer::DeliverPolicy::All,
            Start::New => jetstream::consumer::DeliverPolicy::New,
            Start::Last => jetstream::consumer::DeliverPolicy::Last,
        },
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_millis(spec.ack_wait_ms),
        max_deliver: spec.max_deliver,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    let consumer = match &spec.durable {
        Some(durable) => stream.get_or_create_consumer(durable, config).await,
        None => stream.create_consumer(config).await,
    }
    .map_err(|e| format!("JetStream consumer on {stream_name:?}: {e}"))?;
    feed.health.up();

    // Messages handed to the client and not yet settled, by stream sequence.
    let mut unsettled: HashMap<String, jetstream::message::Acker> = HashMap::new();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                feed.health.down(&format!("JetStream pull: {e}"));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                verdict = verdicts.recv() => {
                    let Some(verdict) = verdict else {
                        // The connection is gone. What it did not settle comes back after
                        // `ack_wait_ms`; closing our NATS connection ends our pull requests.
                        let _ = client.drain().await;
                        return Ok(());
                    };
                    let (id, kind) = match &verdict {
                        Settle::Ack(id) => (id, AckKind::Ack),
                        Settle::Nack(id) => (id, AckKind::Nak(None)),
                    };
                    if let Some(acker) = unsettled.remove(id) {
                        if let Err(e) = acker.ack_with(kind).await {
                            tracing::warn!(source = &*feed.source, "JetStream ack of {id}: {e}");
                        }
                        feed.settled(&verdict);
                    }
                }
                message = messages.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => {
                            // Missed heartbeats and the like: the client reconnects, pull again.
                            feed.health.down(&format!("JetStream pull: {e}"));
                            break;
                        }
                        None => break,
                    };
                    feed.health.up();
                    let Ok(info) = message.info().map(|i| (i.stream_sequence, i.delivered, i.published)) else {
                        continue;
                    };
                    let (sequence, delivered, published) = info;
                    let (message, acker) = message.split();
                    let id = sequence.to_string();
                    let mut attrs = attrs(&message.subject, message.headers.as_ref());
                    attrs.push(("redelivery_count".to_string(), (delivered - 1).to_string().into()));
                    attrs.push((
                        "publish_time".to_string(),
                        (published.unix_timestamp_nanos() / 1_000_000).to_string().into(),
                    ));
                    unsettled.insert(id.clone(), acker);
                    let opcode = Opcode::of(&message.payload);
                    if !feed.deliver(id, opcode, message.payload, attrs).await {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
