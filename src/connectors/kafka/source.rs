//! The `kafka` source: a member of a Kafka consumer group (librdkafka's StreamConsumer through
//! rdkafka) reading one topic. Spec: a topic, or `{"topic", "group", "start":
//! "earliest"|"latest", "max_unacked", "properties"}`. The id of a message is `PARTITION:OFFSET`.
//!
//! Offsets are committed by this connector, never automatically: per partition, the offset
//! below which every message handed over was acked, so a commit never passes an unacked
//! message (one acked after an unacked gap comes again to the group's next consumer). Kafka
//! has no per-message nack: a nacked message is held here and handed over again at once, with
//! `redelivery_count` one higher. When the connection closes the consumer leaves the group, and
//! what it did not ack goes to the group's next consumer from the committed offset. A member
//! that reads nothing for `max.poll.interval.ms` (a client that takes nothing, `max_unacked`
//! reached) is dropped from the group by librdkafka and joins again: its unacked messages may
//! come twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::default_brokers;
use crate::connectors::sources::{Feed, parse_spec};
use crate::health::PartHealth;
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The bootstrap brokers, comma separated (`bootstrap.servers`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// librdkafka consumer properties for every subscription (`session.timeout.ms`,
    /// `security.protocol`...); a spec's own `properties` come on top.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    topic: String,
    /// The consumer group (`group.id`): its members share the topic's partitions.
    #[serde(default = "default_group")]
    group: String,
    /// Where a group with no committed offset starts (`auto.offset.reset`).
    #[serde(default)]
    start: Start,
    /// Messages handed over and not acked, at most: then reading waits for verdicts.
    #[serde(default = "default_max_unacked")]
    max_unacked: usize,
    /// librdkafka consumer properties of this subscription, over the source's: only those of
    /// `SPEC_PROPERTIES`, since a spec may come from a client.
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// What a spec may tune. Others (file paths, plugins, credentials, commands) stay with the
/// config file: a filter may build its spec from what a client sent.
const SPEC_PROPERTIES: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.error.backoff.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "isolation.level",
    "partition.assignment.strategy",
    "group.instance.id",
    "client.id",
    "check.crcs",
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Start {
    Earliest,
    #[default]
    Latest,
}

fn default_group() -> String {
    "framegate".into()
}
fn default_max_unacked() -> usize {
    1000
}

/// Pause before reading again after an error, so that a lasting one is not logged in a loop.
const RETRY: Duration = Duration::from_secs(1);

/// What is known of one assigned partition.
#[derive(Default)]
struct Partition {
    /// Messages handed over and not acked yet, by offset: kept to hand over again on nack.
    held: BTreeMap<i64, Held>,
    /// The offset after the last message handed over.
    next: i64,
    /// The offset last committed by this consumer.
    committed: Option<i64>,
}

struct Held {
    message: OwnedMessage,
    redeliveries: u32,
}

impl Partition {
    /// Everything below this offset was acked.
    fn done_below(&self) -> i64 {
        self.held.keys().next().copied().unwrap_or(self.next)
    }
}

type Partitions = Arc<Mutex<HashMap<i32, Partition>>>;

/// What librdkafka tells of the group and the brokers: a revoked partition's state goes (its
/// acks are no longer ours); broker states, errors and commits make the source's health.
struct Context {
    partitions: Partitions,
    health: PartHealth,
    brokers: String,
}

/// The part of librdkafka's statistics that says whether a broker is reachable.
#[derive(Deserialize)]
struct Stats {
    brokers: HashMap<String, BrokerStats>,
}

#[derive(Deserialize)]
struct BrokerStats {
    state: String,
    /// `configured` or `learned` for real brokers; librdkafka's `internal` one is always up.
    source: String,
}

impl ClientContext for Context {
    /// A broker back up says so here even when no message comes (an idle topic).
    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(stats) = serde_json::from_slice::<Stats>(statistics)
            && stats
                .brokers
                .values()
                .any(|broker| broker.state == "UP" && broker.source != "internal")
        {
            self.health.up();
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.down(&format!("kafka {}: {reason}", self.brokers));
        } else {
            tracing::warn!("kafka {}: {error}: {reason}", self.brokers);
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut partitions = self.partitions.lock().unwrap();
            for element in revoked.elements() {
                partitions.remove(&element.partition());
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.health.up(),
            Err(e) => tracing::warn!("kafka {}: commit {offsets:?}: {e}", self.brokers),
        }
    }
}

/// The consumer, closed off the async threads when the subscription ends: closing leaves the
/// group, which waits for the broker.
struct Member(Option<StreamConsumer<Context>>);

impl Drop for Member {
    fn drop(&mut self) {
        if let (Some(consumer), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn_blocking(move || drop(consumer));
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
    if let Some(name) = spec
        .properties
        .keys()
        .find(|name| !SPEC_PROPERTIES.contains(&name.as_str()))
    {
        return Err(format!(
            "kafka spec property {name:?} is not one a subscription may set (set it in the source's properties)"
        ));
    }
    let mut config = ClientConfig::new();
    // How often librdkafka tells the broker states, which bring the health back up.
    config.set("statistics.interval.ms", "10000");
    for (name, value) in options.properties.iter().chain(&spec.properties) {
        config.set(name, value);
    }
    // Set last, over any property: the commits are this connector's.
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &spec.group)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            match spec.start {
                Start::Earliest => "earliest",
                Start::Latest => "latest",
            },
        );
    let partitions = Partitions::default();
    let context = Context {
        partitions: partitions.clone(),
        health: feed.health.clone(),
        brokers: options.brokers.clone(),
    };
    let where_ = format!(
        "kafka {} topic {:?} group {:?}",
        options.brokers, spec.topic, spec.group
    );
    let member = Member(Some(
        config
            .create_with_context(context)
            .map_err(|e| format!("{where_}: {e}"))?,
    ));
    let consumer = member.0.as_ref().expect("set above");
    consumer
        .subscribe(&[&spec.topic])
        .map_err(|e| format!("{where_}: {e}"))?;

    loop {
        let unacked: usize = partitions.lock().unwrap().values().map(|p| p.held.len()).sum();
        tokio::select! {
            received = consumer.recv(), if unacked < spec.max_unacked => {
                let message = match received {
                    Ok(message) => message.detach(),
                    // Errors here are events (one connection lost, a topic not there yet):
                    // librdkafka carries on by itself. Only all brokers down is the broker down.
                    Err(e) => {
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
                            feed.health.down(&format!("{where_}: {e}"));
                        } else {
                            tracing::warn!(source = &*feed.source, "{where_}: {e}");
                        }
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                feed.health.up();
                {
                    let mut partitions = partitions.lock().unwrap();
                    let partition = partitions.entry(message.partition()).or_default();
                    partition.next = message.offset() + 1;
                    partition.held.insert(
                        message.offset(),
                        Held { message: message.clone(), redeliveries: 0 },
                    );
                }
                // A first message pins the group's position there, so that it comes again to the
                // next consumer even if nothing is ever acked (also with `start: latest`).
                commit(consumer, &partitions, &spec.topic, &where_);
                if !hand_over(&feed, message, 0).await {
                    return Ok(());
                }
            }
            verdict = verdicts.recv() => {
                let Some(verdict) = verdict else { return Ok(()) };
                // Verdicts that are already here are carried out together, then committed once.
                let mut again = Vec::new();
                for verdict in std::iter::once(verdict).chain(std::iter::from_fn(|| verdicts.try_recv().ok())) {
                    if let Some(redeliver) = settle(&partitions, &verdict) {
                        again.extend(redeliver);
                        feed.settled(&verdict);
                    } else {
                        tracing::debug!(source = &*feed.source, "{where_}: {verdict:?} of no message held here");
                    }
                }
                commit(consumer, &partitions, &spec.topic, &where_);
                for (message, redeliveries) in again {
                    if !hand_over(&feed, message, redeliveries).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Carries out a verdict on the held messages: None when the id is not held (a revoked
/// partition, an id acked before); for a nack, the message to hand over again.
fn settle(partitions: &Partitions, verdict: &Settle) -> Option<Option<(OwnedMessage, u32)>> {
    let (Settle::Ack(id) | Settle::Nack(id)) = verdict;
    let (partition, offset) = id.split_once(':')?;
    let (partition, offset): (i32, i64) = (partition.parse().ok()?, offset.parse().ok()?);
    let mut partitions = partitions.lock().unwrap();
    let held = partitions.get_mut(&partition)?;
    match verdict {
        Settle::Ack(_) => held.held.remove(&offset).map(|_| None),
        Settle::Nack(_) => held.held.get_mut(&offset).map(|held| {
            held.redeliveries += 1;
            Some((held.message.clone(), held.redeliveries))
        }),
    }
}

/// Commits, for each partition whose acked prefix grew, the offset of its first unacked message.
fn commit(consumer: &StreamConsumer<Context>, partitions: &Partitions, topic: &str, where_: &str) {
    let mut offsets = TopicPartitionList::new();
    for (&number, partition) in partitions.lock().unwrap().iter_mut() {
        let below = partition.done_below();
        if partition.committed.is_none_or(|committed| committed < below) {
            partition.committed = Some(below);
            offsets
                .add_partition_offset(topic, number, Offset::Offset(below))
                .expect("a plain offset is always valid");
        }
    }
    if offsets.count() > 0
        && let Err(e) = consumer.commit(&offsets, CommitMode::Async)
    {
        tracing::warn!("{where_}: commit {offsets:?}: {e}");
    }
}

async fn hand_over(feed: &Feed, message: OwnedMessage, redeliveries: u32) -> bool {
    let mut attrs = vec![
        ("topic".to_string(), Bytes::copy_from_slice(message.topic().as_bytes())),
        ("partition".to_string(), message.partition().to_string().into()),
        ("offset".to_string(), message.offset().to_string().into()),
        ("redelivery_count".to_string(), redeliveries.to_string().into()),
    ];
    if let Some(key) = message.key() {
        attrs.push(("key".into(), Bytes::copy_from_slice(key)));
    }
    if let Some(ms) = message.timestamp().to_millis() {
        attrs.push(("publish_time".into(), ms.to_string().into()));
    }
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header.value.map(Bytes::copy_from_slice).unwrap_or_default();
            attrs.push((format!("header.{}", header.key), value));
        }
    }
    let id = format!("{}:{}", message.partition(), message.offset());
    let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    feed.deliver(id, Opcode::of(&payload), payload, attrs).await
}
