//! The `kafka` sink: every record is a Kafka record (librdkafka through rdkafka), produced to
//! the topic its template names, with the record's key (or the `key` template) and its headers
//! as Kafka headers. The producer is idempotent with `acks=all`: a confirmed record is one that
//! every in-sync replica of its partition wrote, and librdkafka's own retries never write it
//! twice. Its id is `TOPIC:PARTITION:OFFSET`. The producer is made at the first batch and
//! librdkafka (re)connects by itself, so a broker down at start does not stop framegate.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;

use super::default_brokers;
use crate::connectors::sinks::Deliver;
use crate::connectors::template::{self, Template};
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    /// The bootstrap brokers, comma separated (`bootstrap.servers`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// The topic each record goes to, e.g. `{meta.hydra-kafka-topic}`.
    #[serde(deserialize_with = "template::deserialize")]
    pub topic: Template,
    /// How long librdkafka may try to deliver a record before it fails (`message.timeout.ms`).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Any other librdkafka producer property (`linger.ms`, `compression.type`, `security.protocol`...),
    /// set last: it may also change `acks` (then with `enable.idempotence = "false"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_timeout() -> u64 {
    30_000
}

pub struct Kafka {
    options: Arc<SinkOptions>,
    producer: Option<FutureProducer>,
    health: PartHealth,
}

impl Kafka {
    pub fn new(options: Arc<SinkOptions>, health: PartHealth) -> Kafka {
        Kafka {
            options,
            producer: None,
            health,
        }
    }

    fn producer(&mut self) -> Result<FutureProducer, String> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.options.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", self.options.timeout_ms.to_string());
        for (name, value) in &self.options.properties {
            config.set(name, value);
        }
        let producer: FutureProducer = config
            .create()
            .map_err(|e| format!("kafka producer for {}: {e}", self.options.brokers))?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }
}

impl Deliver for Kafka {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let producer = match self.producer() {
            Ok(producer) => producer,
            Err(e) => {
                self.health.down(&e);
                return vec![Err(DeliveryError::Failed(e)); batch.len()];
            }
        };
        // All records go out before any is awaited: librdkafka batches them per partition, and
        // the idempotent producer keeps their order.
        let mut pending = Vec::with_capacity(batch.len());
        for record in batch {
            let topic = match self.options.topic.render(record) {
                Ok(topic) => topic,
                Err(refused) => {
                    pending.push(Err(refused));
                    continue;
                }
            };
            let headers = record
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |headers, (name, value)| {
                    headers.insert(Header {
                        key: name,
                        value: Some(value.as_ref()),
                    })
                });
            let mut kafka_record = FutureRecord::to(&topic)
                .payload(record.payload.as_ref())
                .headers(headers);
            if let Some(key) = &record.key {
                kafka_record = kafka_record.key(key.as_ref());
            }
            pending.push(match producer.send_result(kafka_record) {
                Ok(delivery) => Ok((topic, delivery)),
                Err((e, _)) => Err(DeliveryError::Failed(format!(
                    "kafka {} topic {topic:?}: {e}",
                    self.options.brokers
                ))),
            });
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut broker_failure = None;
        for item in pending {
            outcomes.push(match item {
                Ok((topic, delivery)) => match delivery.await {
                    Ok(Ok(delivery)) => Ok(format!("{topic}:{}:{}", delivery.partition, delivery.offset)),
                    Ok(Err((e, _))) => {
                        let reason = format!("kafka {} topic {topic:?}: {e}", self.options.brokers);
                        broker_failure.get_or_insert_with(|| reason.clone());
                        Err(DeliveryError::Failed(reason))
                    }
                    Err(_) => Err(DeliveryError::Failed(format!(
                        "kafka topic {topic:?}: the producer dropped the record"
                    ))),
                },
                Err(reason) => Err(reason),
            });
        }
        // The idempotent producer stops for good on some broker answers (a sequence gap after
        // a timeout): the next batch makes a new one.
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::warn!(
                "kafka {}: producer failed ({code:?}: {reason}); making a new one",
                self.options.brokers
            );
            self.producer = None;
        }
        // Records failed by their own template say nothing of the broker.
        if outcomes.iter().any(|o| o.is_ok()) {
            self.health.up();
        } else if let Some(reason) = broker_failure {
            self.health.down(&reason);
        }
        outcomes
    }
}
