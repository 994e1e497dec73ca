//! The `amqp` source (lapin): a consumer of a RabbitMQ queue with manual acks. Spec: a queue
//! name, or `{"queue", "prefetch", "declare", "consumer_tag"}`; `declare` makes the queue
//! (durable) if it is missing. The id of a message is its delivery tag; ack is basic.ack, nack
//! is basic.nack with requeue, which hands the message out again at once. Messages not settled
//! when the connection closes are requeued by RabbitMQ and come again (flagged redelivered), to
//! this consumer or another. A subscription that cannot start (no such queue, access refused)
//! fails; one that started connects again after losing the broker, and its ids then carry the
//! connection's number (`N:TAG`), so that a late verdict never settles a newer message.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{declare_durable, default_url, open_channel, short};
use crate::connectors::sources::{Feed, parse_spec};
use crate::connectors::url::redact;
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The broker, `amqp://USER:PASSWORD@HOST:PORT/VHOST` (`amqps://` for TLS).
    #[serde(default = "default_url")]
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    queue: String,
    /// Messages handed out and not yet settled, at most (basic.qos).
    #[serde(default = "default_prefetch")]
    prefetch: u16,
    /// Declare the queue (durable) before consuming.
    #[serde(default)]
    declare: bool,
    /// The consumer's tag; one the broker makes by default.
    #[serde(default)]
    consumer_tag: String,
}

fn default_prefetch() -> u16 {
    100
}

/// Pause before connecting again after losing the broker.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(
    options: Arc<SourceOptions>,
    spec: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "queue")?;
    let mut connections = 0;
    loop {
        let mut started = false;
        let ended = consume(&options, &spec, &feed, &mut verdicts, connections, &mut started).await;
        match ended {
            Ok(()) => return Ok(()),
            Err(reason) if !started && connections == 0 => return Err(reason),
            Err(reason) => {
                feed.health.down(&reason);
                tokio::time::sleep(RETRY).await;
            }
        }
        connections += u64::from(started);
    }
}

/// One connection's consumer, until the connection or the subscription ends.
async fn consume(
    options: &SourceOptions,
    spec: &Spec,
    feed: &Feed,
    verdicts: &mut mpsc::UnboundedReceiver<Settle>,
    connection_number: u64,
    started: &mut bool,
) -> Result<(), String> {
    let url = redact(&options.url);
    let queue = &spec.queue;
    // The connection lives as long as its channel is used.
    let (_connection, channel) = open_channel(&options.url).await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("amqp {url}: prefetch {}: {e}", spec.prefetch))?;
    if spec.declare {
        declare_durable(&channel, queue).await?;
    }
    let mut consumer = channel
        .basic_consume(
            short("queue", queue.clone())?,
            short("consumer tag", spec.consumer_tag.clone())?,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("amqp consume queue {queue:?}: {e}"))?;
    *started = true;
    feed.health.up();

    let id_of = |tag: u64| match connection_number {
        0 => tag.to_string(),
        n => format!("{n}:{tag}"),
    };
    // Delivery tags handed to the client and not yet settled.
    let mut unsettled: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            verdict = verdicts.recv() => {
                let Some(verdict) = verdict else { return Ok(()) };
                let id = match &verdict {
                    Settle::Ack(id) | Settle::Nack(id) => id,
                };
                if !unsettled.remove(id) {
                    continue;
                }
                let tag = id.rsplit(':').next().and_then(|t| t.parse().ok()).expect("ids are made here");
                let settled = match &verdict {
                    Settle::Ack(_) => channel.basic_ack(tag, BasicAckOptions::default()).await,
                    Settle::Nack(_) => {
                        let requeue = BasicNackOptions { multiple: false, requeue: true };
                        channel.basic_nack(tag, requeue).await
                    }
                };
                settled.map_err(|e| format!("amqp {verdict:?} on queue {queue:?}: {e}"))?;
                feed.settled(&verdict);
            }
            delivery = consumer.next() => {
                let delivery = match delivery {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => return Err(format!("amqp consumer of queue {queue:?}: {e}")),
                    None => return Err(format!("amqp consumer of queue {queue:?} was cancelled")),
                };
                let id = id_of(delivery.delivery_tag);
                unsettled.insert(id.clone());
                let attrs = attributes(&delivery);
                let payload = Bytes::from(delivery.data);
                if !feed.deliver(id, Opcode::of(&payload), payload, attrs).await {
                    return Ok(());
                }
            }
        }
    }
}

/// What a filter sees of a message as `msg.*`.
fn attributes(delivery: &Delivery) -> Vec<(String, Bytes)> {
    let routing_key = delivery.routing_key.as_str();
    let mut attrs = vec![
        ("topic".to_string(), Bytes::copy_from_slice(routing_key.as_bytes())),
        (
            "exchange".to_string(),
            Bytes::copy_from_slice(delivery.exchange.as_str().as_bytes()),
        ),
    ];
    let headers = delivery.properties.headers().as_ref().map(FieldTable::inner);
    let mut key = None;
    let mut delivery_count = None;
    for (name, value) in headers.into_iter().flatten() {
        let Some(value) = text(value) else { continue };
        match name.as_str() {
            "key" => key = Some(value),
            // Quorum queues count deliveries; classic queues only flag a redelivery.
            "x-delivery-count" => delivery_count = Some(value),
            name => attrs.push((format!("header.{name}"), value)),
        }
    }
    attrs.push((
        "key".to_string(),
        key.unwrap_or_else(|| Bytes::copy_from_slice(routing_key.as_bytes())),
    ));
    let redelivered = Bytes::from_static(if delivery.redelivered { b"1" } else { b"0" });
    attrs.push(("redelivery_count".to_string(), delivery_count.unwrap_or(redelivered)));
    if let Some(seconds) = delivery.properties.timestamp() {
        attrs.push(("publish_time".to_string(), (seconds * 1000).to_string().into()));
    }
    attrs
}

/// A header value as text, for the kinds headers carry in practice.
fn text(value: &AMQPValue) -> Option<Bytes> {
    Some(match value {
        AMQPValue::LongString(s) => Bytes::copy_from_slice(s.as_bytes()),
        AMQPValue::ShortString(s) => Bytes::copy_from_slice(s.as_str().as_bytes()),
        AMQPValue::Boolean(b) => b.to_string().into(),
        AMQPValue::ShortShortInt(n) => n.to_string().into(),
        AMQPValue::ShortShortUInt(n) => n.to_string().into(),
        AMQPValue::ShortInt(n) => n.to_string().into(),
        AMQPValue::ShortUInt(n) => n.to_string().into(),
        AMQPValue::LongInt(n) => n.to_string().into(),
        AMQPValue::LongUInt(n) => n.to_string().into(),
        AMQPValue::LongLongInt(n) => n.to_string().into(),
        AMQPValue::Timestamp(n) => n.to_string().into(),
        _ => return None,
    })
}
