//! The `pulsar` sink (pulsar-rs): every record is a message on a Pulsar topic named by a
//! template over the record. The record's key is the message's partition key (base64-flagged
//! when it is not UTF-8), its headers the message's properties. One producer per topic, made at
//! the topic's first record and kept; a producer that fails is dropped and made again for the
//! next try. A confirmed record is one the broker sent a receipt for; its id is the message id
//! in the text form of Pulsar's WebSocket API (`id.rs`). Messages of one batch are
//! all sent before any receipt is awaited, so a batch costs one round trip per topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::pulsar::compression::{Compression as Codec, CompressionSnappy, CompressionZlib};
use ::pulsar::producer::{Message, SendFuture};
use ::pulsar::{Producer, ProducerOptions, Pulsar as Client, TokioExecutor};
use base64::Engine;
use serde::Deserialize;

use super::{connect, default_url, id};
use crate::connectors::sinks::{BATCH, Deliver};
use crate::connectors::template::{self, Template};
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    /// The broker's service URL (`pulsar://` or `pulsar+ssl://`).
    #[serde(default = "default_url")]
    pub url: String,
    /// The topic of each record, e.g. `persistent://public/default/{meta.query.topic}`.
    #[serde(deserialize_with = "template::deserialize")]
    pub topic: Template,
    /// The producers' name (the broker makes one up when absent). A name is unique per topic:
    /// two framegate instances with the same name on one topic refuse each other.
    pub producer_name: Option<String>,
    /// Group the messages of a batch into Pulsar batches (one per topic); their ids then carry
    /// a batch index.
    #[serde(default)]
    pub batching: bool,
    /// Compress message payloads: `zlib` or `snappy`.
    pub compression: Option<Compression>,
    /// How long a batch may wait for the broker's receipts (and for connecting).
    #[serde(default = "default_send_timeout")]
    pub send_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Zlib,
    Snappy,
}

fn default_send_timeout() -> u64 {
    30_000
}

pub struct Pulsar {
    options: Arc<SinkOptions>,
    client: Option<Client<TokioExecutor>>,
    /// Producers by rendered topic.
    producers: HashMap<String, Producer<TokioExecutor>>,
    health: PartHealth,
}

impl Pulsar {
    pub fn new(options: Arc<SinkOptions>, health: PartHealth) -> Pulsar {
        Pulsar {
            options,
            client: None,
            producers: HashMap::new(),
            health,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.options.send_timeout_ms)
    }

    /// The producer of a topic, connecting at first use: a broker down at start does not stop
    /// framegate.
    async fn producer(&mut self, topic: &str) -> Result<&mut Producer<TokioExecutor>, String> {
        if !self.producers.contains_key(topic) {
            if self.client.is_none() {
                self.client = Some(connect(&self.options.url, self.timeout()).await?);
            }
            let client = self.client.as_ref().expect("connected above");
            let options = ProducerOptions {
                batch_size: self.options.batching.then_some(BATCH as u32),
                compression: self.options.compression.map(|c| match c {
                    Compression::Zlib => Codec::Zlib(CompressionZlib::default()),
                    Compression::Snappy => Codec::Snappy(CompressionSnappy::default()),
                }),
                ..Default::default()
            };
            let mut builder = client.producer().with_topic(topic).with_options(options);
            if let Some(name) = &self.options.producer_name {
                builder = builder.with_name(name);
            }
            let producer = tokio::time::timeout(self.timeout(), builder.build())
                .await
                .map_err(|_| format!("pulsar {topic}: no producer within {:?}", self.timeout()))?
                .map_err(|e| format!("pulsar {topic}: producer: {e}"))?;
            self.producers.insert(topic.to_string(), producer);
        }
        Ok(self.producers.get_mut(topic).expect("inserted above"))
    }

    /// Hands one record to its topic's producer; the receipt comes later.
    async fn send(&mut self, record: &Record) -> Result<(String, SendFuture), DeliveryError> {
        let topic = self.options.topic.render(record)?;
        let (partition_key, partition_key_b64_encoded) = match &record.key {
            Some(key) => match std::str::from_utf8(key) {
                Ok(key) => (Some(key.to_string()), None),
                Err(_) => (Some(base64::engine::general_purpose::STANDARD.encode(key)), Some(true)),
            },
            None => (None, None),
        };
        let message = Message {
            payload: record.payload.to_vec(),
            properties: record
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
            partition_key,
            partition_key_b64_encoded,
            ..Default::default()
        };
        let producer = self.producer(&topic).await.map_err(DeliveryError::Failed)?;
        match producer.send_non_blocking(message).await {
            Ok(receipt) => Ok((topic, receipt)),
            Err(e) => {
                self.producers.remove(&topic);
                Err(DeliveryError::Failed(format!("pulsar {topic}: send: {e}")))
            }
        }
    }
}

impl Deliver for Pulsar {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut sent = Vec::with_capacity(batch.len());
        for record in batch {
            sent.push(self.send(record).await);
        }
        if self.options.batching {
            // Close the Pulsar batches now rather than when they fill up.
            let mut flushed = Vec::new();
            for (topic, producer) in &mut self.producers {
                if sent.iter().any(|s| matches!(s, Ok((t, _)) if t == topic))
                    && let Err(e) = producer.send_batch().await
                {
                    flushed.push((topic.clone(), format!("pulsar {topic}: send: {e}")));
                }
            }
            for (topic, reason) in flushed {
                self.producers.remove(&topic);
                for s in sent.iter_mut().filter(|s| matches!(s, Ok((t, _)) if *t == topic)) {
                    *s = Err(DeliveryError::Failed(reason.clone()));
                }
            }
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for sent in sent {
            let (topic, receipt) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            let outcome = match tokio::time::timeout_at(deadline, receipt).await {
                Ok(Ok(receipt)) => receipt
                    .message_id
                    .map(|message_id| id::encode(&message_id))
                    .ok_or_else(|| DeliveryError::Failed(format!("pulsar {topic}: a receipt without a message id"))),
                Ok(Err(e)) => Err(DeliveryError::Failed(format!("pulsar {topic}: {e}"))),
                Err(_) => Err(DeliveryError::Failed(format!(
                    "pulsar {topic}: no receipt within {:?}",
                    self.timeout()
                ))),
            };
            if outcome.is_err() {
                self.producers.remove(&topic);
            }
            outcomes.push(outcome);
        }
        self.health.report(&outcomes);
        outcomes
    }
}
