//! The `nats` and `jetstream` sinks (async-nats). `nats` publishes on core NATS; a confirmed
//! record is one the server has taken (a flush after the batch). `jetstream` publishes to a
//! stream; a confirmed record is one JetStream acknowledged, and its id is `STREAM:SEQUENCE`.
//! The subject is a template over the record; the record's key travels as header `key`, its
//! headers as NATS headers. The client reconnects by itself; a broker that is away fails the
//! batch after `timeout_ms`, and the runner retries it. JetStream records carry `Nats-Msg-Id`
//! (unique per record, the same on every attempt), so a retry after a lost ack is not stored
//! twice (within the stream's duplicate window).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{connect, default_url};
use crate::connectors::sinks::{Deliver, fail_pending};
use crate::connectors::template::{self, Template};
use crate::connectors::url::redact;
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    #[serde(default = "default_url")]
    pub url: String,
    /// Where each record goes, e.g. `events.{meta.query.topic}`.
    #[serde(deserialize_with = "template::deserialize")]
    pub subject: Template,
    /// How long a batch may wait for the server.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Publish to JetStream (the `jetstream` kind) rather than core NATS.
    #[serde(skip)]
    pub jetstream: bool,
}

fn default_timeout() -> u64 {
    5_000
}

pub struct Nats {
    options: Arc<SinkOptions>,
    client: Option<async_nats::Client>,
    health: PartHealth,
}

impl Nats {
    pub fn new(options: Arc<SinkOptions>, health: PartHealth) -> Nats {
        Nats {
            options,
            client: None,
            health,
        }
    }

    /// The client, connecting at first use: a broker down at start does not stop framegate.
    async fn client(&mut self) -> Result<async_nats::Client, String> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = connect(&self.options.url).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    fn message(&self, record: &Record) -> Result<(String, async_nats::HeaderMap), DeliveryError> {
        let subject = self.options.subject.render(record)?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(key) = &record.key {
            headers.insert("key", String::from_utf8_lossy(key).as_ref());
        }
        for (name, value) in &record.headers {
            headers.insert(name.as_str(), String::from_utf8_lossy(value).as_ref());
        }
        if self.options.jetstream {
            // JetStream drops a second copy of a record whose first ack was lost.
            headers.insert(async_nats::header::NATS_MESSAGE_ID, record.unique_id().as_str());
        }
        Ok((subject, headers))
    }

    async fn publish_core(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let client = match self.client().await {
            Ok(client) => client,
            Err(e) => {
                self.health.down(&e);
                return vec![Err(DeliveryError::Failed(e)); batch.len()];
            }
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            let outcome = match self.message(record) {
                Ok((subject, headers)) => client
                    .publish_with_headers(subject, headers, record.payload.clone())
                    .await
                    .map(|()| String::new())
                    .map_err(|e| DeliveryError::Failed(format!("nats publish: {e}"))),
                Err(e) => Err(e),
            };
            outcomes.push(outcome);
        }
        let timeout = Duration::from_millis(self.options.timeout_ms);
        let flushed = match tokio::time::timeout(timeout, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("nats flush: {e}")),
            Err(_) => Err(format!(
                "nats {}: not flushed within {timeout:?}",
                redact(&self.options.url)
            )),
        };
        match flushed {
            Ok(()) => self.health.up(),
            Err(reason) => {
                self.health.down(&reason);
                fail_pending(&mut outcomes, &reason);
            }
        }
        outcomes
    }

    async fn publish_jetstream(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let client = match self.client().await {
            Ok(client) => client,
            Err(e) => return vec![Err(DeliveryError::Failed(e)); batch.len()],
        };
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(Duration::from_millis(self.options.timeout_ms));
        // Publish the whole batch, then wait for the acknowledgements in order.
        let mut pending = Vec::with_capacity(batch.len());
        for record in batch {
            let sent = match self.message(record) {
                Ok((subject, headers)) => context
                    .publish_with_headers(subject, headers, record.payload.clone())
                    .await
                    .map_err(|e| DeliveryError::Failed(format!("jetstream publish: {e}"))),
                Err(e) => Err(e),
            };
            pending.push(sent);
        }
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
        for sent in pending {
            outcomes.push(match sent {
                Ok(ack) => ack
                    .await
                    .map(|ack| format!("{}:{}", ack.stream, ack.sequence))
                    .map_err(|e| DeliveryError::Failed(format!("jetstream: {e}"))),
                Err(e) => Err(e),
            });
        }
        self.health.report(&outcomes);
        outcomes
    }
}

impl Deliver for Nats {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        if self.options.jetstream {
            self.publish_jetstream(batch).await
        } else {
            self.publish_core(batch).await
        }
    }
}
