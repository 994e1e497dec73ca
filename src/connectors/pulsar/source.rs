//! The `pulsar` source (pulsar-rs): a consumer on a Pulsar subscription, or a reader. Spec: a
//! topic, or `{"topic", "subscription", "type": "exclusive"|"shared"|"failover"|"key_shared",
//! "start": "latest"|"earliest", "consumer_name", "receiver_queue_size", "ack_timeout_ms",
//! "dead_letter_topic", "max_redeliver_count", "nack_delay_ms"}`; or `{"topic", "reader": true,
//! "start_message_id", "start"}` for a reader (no subscription to keep, no acks).
//! The id of a message is its message id in the text form of Pulsar's WebSocket API
//! (`id.rs`); ack acknowledges it, nack asks the broker to send it again (per
//! message on shared and key_shared subscriptions), after `nack_delay_ms` (0, the default: at
//! once), as Pulsar's clients hold a nack for their negativeAckRedeliveryDelay. Unacked
//! messages go back to the subscription when the consumer closes (the connection closing drops
//! it), and after `ack_timeout_ms` if set. A subscription the broker refuses (a second consumer
//! on an exclusive one) is tried again until `timeout_ms`, then ends the flow with the reason.
//! Each subscription has a client (a TCP connection) of its own: a broker that answers a
//! refused subscribe by closing the connection (pulsar-lite does) then takes no one else down.
//! Attributes: `topic`, `publish_time`, `redelivery_count` (the broker's count, which pulsar-rs
//! passes on with the patch in vendor/README.md), and `key`, `event_time`, `header.NAME` when set.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ::pulsar::consumer::{DeadLetterPolicy, InitialPosition, Message};
use ::pulsar::proto::MessageIdData;
use ::pulsar::reader::Reader;
use ::pulsar::{Consumer, ConsumerOptions, SubType, TokioExecutor};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{connect, default_url};
use crate::connectors::sources::{Feed, parse_spec};
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The broker's service URL (`pulsar://` or `pulsar+ssl://`).
    #[serde(default = "default_url")]
    pub url: String,
    /// How long connecting and subscribing may take before the subscription fails (a busy
    /// exclusive subscription is tried again until then).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    topic: String,
    #[serde(default = "default_subscription")]
    subscription: String,
    #[serde(default, rename = "type")]
    kind: Kind,
    /// Where a new subscription (or a reader without `start_message_id`) begins.
    #[serde(default)]
    start: Start,
    consumer_name: Option<String>,
    receiver_queue_size: Option<u32>,
    /// Send an unacked message again after this long; 0: only when the consumer closes.
    #[serde(default)]
    ack_timeout_ms: u64,
    dead_letter_topic: Option<String>,
    max_redeliver_count: Option<usize>,
    /// Hold a nack this long before asking the broker to send the message again.
    #[serde(default)]
    nack_delay_ms: u64,
    /// A reader: no subscription, no acks; from `start_message_id`, or from `start`.
    #[serde(default)]
    reader: bool,
    start_message_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    #[default]
    Exclusive,
    Shared,
    Failover,
    KeyShared,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Start {
    #[default]
    Latest,
    Earliest,
}

/// Pause before subscribing again, or reading again after an error.
const RETRY: Duration = Duration::from_millis(250);

fn default_subscription() -> String {
    "framegate".into()
}

/// A consumer, or a reader: where messages come from and verdicts go.
#[allow(clippy::large_enum_variant)] // one per subscription, held by its task
enum Flow {
    Consumer(Consumer<Vec<u8>, TokioExecutor>),
    Reader(Reader<Vec<u8>, TokioExecutor>),
}

impl Flow {
    async fn next(&mut self) -> Option<Result<Message<Vec<u8>>, ::pulsar::Error>> {
        match self {
            Flow::Consumer(consumer) => consumer.next().await,
            Flow::Reader(reader) => reader.next().await,
        }
    }
}

pub async fn run(
    options: Arc<SourceOptions>,
    spec: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "topic")?;
    let timeout = Duration::from_millis(options.timeout_ms);
    let client = connect(&options.url, timeout)
        .await
        .inspect_err(|e| feed.health.down(e))?;
    let start = ConsumerOptions::default().with_initial_position(match spec.start {
        Start::Latest => InitialPosition::Latest,
        Start::Earliest => InitialPosition::Earliest,
    });
    let start = match spec.receiver_queue_size {
        Some(size) => start.with_receiver_queue_size(size),
        None => start,
    };
    let topic = &spec.topic;
    let mut flow = if spec.reader {
        let start = match &spec.start_message_id {
            Some(id) => start.starting_on_message(super::id::decode(id)?),
            None => start,
        };
        let reader = client.reader().with_topic(topic).with_options(start).into_reader();
        Flow::Reader(reader.await.map_err(|e| format!("pulsar reader on {topic}: {e}"))?)
    } else {
        let mut builder = client
            .consumer()
            .with_topic(topic)
            .with_subscription(&spec.subscription)
            .with_subscription_type(match spec.kind {
                Kind::Exclusive => SubType::Exclusive,
                Kind::Shared => SubType::Shared,
                Kind::Failover => SubType::Failover,
                Kind::KeyShared => SubType::KeyShared,
            })
            .with_options(start)
            .with_unacked_message_resend_delay(
                (spec.ack_timeout_ms > 0).then(|| Duration::from_millis(spec.ack_timeout_ms)),
            );
        if let Some(name) = &spec.consumer_name {
            builder = builder.with_consumer_name(name);
        }
        if let Some(dead_letter_topic) = &spec.dead_letter_topic {
            builder = builder.with_dead_letter_policy(DeadLetterPolicy {
                dead_letter_topic: dead_letter_topic.clone(),
                max_redeliver_count: spec.max_redeliver_count.unwrap_or(3),
            });
        }
        // A consumer that just left may still hold the subscription for a moment (and
        // pulsar-lite answers "busy" by closing the connection): try again until the deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match builder.clone().build().await {
                Ok(consumer) => break Flow::Consumer(consumer),
                Err(_) if tokio::time::Instant::now() + RETRY < deadline => tokio::time::sleep(RETRY).await,
                Err(e) => return Err(format!("pulsar subscription {:?} on {topic}: {e}", spec.subscription)),
            }
        }
    };
    feed.health.up();

    // Messages handed to the client and not yet settled: their topic and id, by text id.
    let mut unsettled: HashMap<String, (String, MessageIdData)> = HashMap::new();
    // Nacks held for `nack_delay_ms`, in the order they fall due (the delay is the same for all).
    let nack_delay = Duration::from_millis(spec.nack_delay_ms);
    let mut held_nacks: VecDeque<(tokio::time::Instant, Settle)> = VecDeque::new();
    loop {
        let next_nack = held_nacks.front().map(|(due, _)| *due);
        tokio::select! {
            // Verdicts first: a client's acks count before more messages come.
            biased;
            verdict = verdicts.recv() => {
                let Some(verdict) = verdict else { return Ok(()) };
                if matches!(verdict, Settle::Nack(_)) && !nack_delay.is_zero() {
                    held_nacks.push_back((tokio::time::Instant::now() + nack_delay, verdict));
                } else {
                    settle(&mut flow, &mut unsettled, &feed, verdict).await;
                }
            }
            _ = tokio::time::sleep_until(next_nack.unwrap_or_else(tokio::time::Instant::now)), if next_nack.is_some() => {
                if let Some((_, verdict)) = held_nacks.pop_front() {
                    settle(&mut flow, &mut unsettled, &feed, verdict).await;
                }
            }
            message = flow.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        // pulsar-rs reconnects the consumer by itself; say so meanwhile.
                        feed.health.down(&format!("pulsar {topic}: {e}"));
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                    None => return Err(format!("pulsar {topic}: the consumer ended")),
                };
                feed.health.up();
                // As the sink's receipts (and the Java client) have it: a message of a batch
                // names the batch's size too, so that both sides write the same id.
                let mut message_id = message.message_id().clone();
                if message_id.batch_index.is_some() && message_id.batch_size.is_none() {
                    message_id.batch_size = message.metadata().num_messages_in_batch;
                }
                let id = super::id::encode(&message_id);
                let attrs = attrs(&message);
                if matches!(flow, Flow::Consumer(_)) {
                    unsettled.insert(id.clone(), (message.topic.clone(), message.message_id().clone()));
                }
                let payload = Bytes::from(message.payload.data);
                if !feed.deliver(id, Opcode::of(&payload), payload, attrs).await {
                    // The connection is gone: carry out what it settled, then let go.
                    while let Ok(verdict) = verdicts.try_recv() {
                        settle(&mut flow, &mut unsettled, &feed, verdict).await;
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// Carries out a verdict on a message this flow handed out (a reader has nothing to settle).
async fn settle(
    flow: &mut Flow,
    unsettled: &mut HashMap<String, (String, MessageIdData)>,
    feed: &Feed,
    verdict: Settle,
) {
    let Flow::Consumer(consumer) = flow else { return };
    let (Settle::Ack(id) | Settle::Nack(id)) = &verdict;
    let Some((topic, message_id)) = unsettled.remove(id) else {
        return;
    };
    let settled = match &verdict {
        Settle::Ack(_) => consumer.ack_with_id(&topic, message_id).await,
        Settle::Nack(_) => consumer.nack_with_id(&topic, message_id).await,
    };
    match settled {
        Ok(()) => feed.settled(&verdict),
        Err(e) => tracing::warn!(source = &*feed.source, "pulsar {verdict:?} on {topic}: {e}"),
    }
}

/// What a message tells besides its payload, as `msg.*` attributes.
fn attrs(message: &Message<Vec<u8>>) -> Vec<(String, Bytes)> {
    let metadata = message.metadata();
    let mut attrs = vec![
        ("topic".to_string(), Bytes::from(message.topic.clone())),
        (
            "publish_time".to_string(),
            Bytes::from(metadata.publish_time.to_string()),
        ),
        (
            "redelivery_count".to_string(),
            Bytes::from(message.redelivery_count.to_string()),
        ),
    ];
    if let Ok(Some(key)) = message.key_bytes() {
        attrs.push(("key".into(), key.into()));
    }
    if let Some(event_time) = metadata.event_time.filter(|&t| t > 0) {
        attrs.push(("event_time".into(), event_time.to_string().into()));
    }
    for property in &metadata.properties {
        attrs.push((format!("header.{}", property.key), property.value.clone().into()));
    }
    attrs
}
