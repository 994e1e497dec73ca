//! The `amqp` sink (lapin): every record is a message published to a RabbitMQ exchange with a
//! routing key, both templates over the record (`exchange = ""` is the default exchange, where
//! the routing key names the queue). The sink's channel is in confirm mode: a confirmed record
//! is one the broker acknowledged (publisher confirms); a nack fails it, and so does a message
//! the broker returned because no queue took it (`mandatory`). The id in its result is the
//! publish's delivery tag, the broker's sequence number of it on the sink's channel (1, 2, ...,
//! counting from 1 again after a reconnect). The record's key travels as header `key`, its
//! headers as AMQP headers (long strings). The connection is made at the first batch, and again
//! at the batch after any failure of the connection or the channel.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde::Deserialize;

use super::{declare_durable, default_url, open_channel, short};
use crate::connectors::sinks::Deliver;
use crate::connectors::template::{self, Template};
use crate::connectors::url::redact;
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    /// The broker, `amqp://USER:PASSWORD@HOST:PORT/VHOST` (`amqps://` for TLS).
    #[serde(default = "default_url")]
    pub url: String,
    /// The exchange each record is published to, e.g. `{meta.query.exchange}`; `""` is the
    /// default exchange, which routes to the queue named by the routing key.
    #[serde(default = "default_exchange", deserialize_with = "template::deserialize")]
    pub exchange: Template,
    /// The routing key of each record, e.g. `orders.{meta.path.tenant}`.
    #[serde(deserialize_with = "template::deserialize")]
    pub routing_key: Template,
    /// A queue to declare (durable) when connecting, so that records have somewhere to go. It
    /// is bound to `exchange` with `bind_key` when the exchange is a fixed, non-empty name.
    pub declare_queue: Option<String>,
    /// The binding key of `declare_queue`: the routing key when that is fixed, else `#`.
    pub bind_key: Option<String>,
    /// Messages survive a broker restart (delivery mode 2) in durable queues.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// A message no queue takes fails its record (it is returned, not silently dropped).
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// How long a batch may wait for the connection and the broker's confirms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_exchange() -> Template {
    Template::parse("").expect("the empty template parses")
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    5_000
}

/// Where a message went, for errors.
fn route(exchange: &ShortString, routing_key: &ShortString) -> String {
    format!("exchange {:?}, key {:?}", exchange.as_str(), routing_key.as_str())
}

/// The connection and its confirm-mode channel, with the number of messages published on it.
struct Link {
    connection: Connection,
    channel: Channel,
    published: u64,
}

pub struct Amqp {
    options: Arc<SinkOptions>,
    link: Option<Link>,
    health: PartHealth,
}

impl Amqp {
    pub fn new(options: Arc<SinkOptions>, health: PartHealth) -> Amqp {
        Amqp {
            options,
            link: None,
            health,
        }
    }

    async fn connect(&self) -> Result<Link, String> {
        let url = redact(&self.options.url);
        let (connection, channel) = open_channel(&self.options.url).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("amqp {url}: confirm mode: {e}"))?;
        if let Some(queue) = &self.options.declare_queue {
            declare_durable(&channel, queue).await?;
            if let Some(exchange) = self.options.exchange.literal().filter(|e| !e.is_empty()) {
                let key = (self.options.bind_key.as_deref())
                    .or(self.options.routing_key.literal())
                    .unwrap_or("#");
                channel
                    .queue_bind(
                        short("queue", queue.clone())?,
                        short("exchange", exchange.into())?,
                        short("binding key", key.into())?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("amqp bind queue {queue:?} to exchange {exchange:?} with {key:?}: {e}"))?;
            }
        }
        Ok(Link {
            connection,
            channel,
            published: 0,
        })
    }

    /// Exchange, routing key and properties of a record's message. A name AMQP cannot carry
    /// (over 255 bytes) refuses the record: sending it again cannot help.
    fn message(&self, record: &Record) -> Result<(ShortString, ShortString, BasicProperties), DeliveryError> {
        let short = |what: &str, text: String| short(what, text).map_err(DeliveryError::Refused);
        let exchange = short("exchange", self.options.exchange.render(record)?)?;
        let routing_key = short("routing key", self.options.routing_key.render(record)?)?;
        let mut headers = FieldTable::default();
        let entries = record
            .key
            .iter()
            .map(|key| ("key", key))
            .chain(record.headers.iter().map(|(name, value)| (name.as_str(), value)));
        for (name, value) in entries {
            headers.insert(
                short("header name", name.into())?,
                AMQPValue::LongString(value.to_vec().into()),
            );
        }
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut properties = BasicProperties::default().with_headers(headers).with_timestamp(seconds);
        if self.options.persistent {
            properties = properties.with_delivery_mode(2);
        }
        Ok((exchange, routing_key, properties))
    }
}

impl Deliver for Amqp {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let timeout = Duration::from_millis(self.options.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let url = redact(&self.options.url);
        let mut link = match self.link.take() {
            Some(link) => link,
            None => match tokio::time::timeout_at(deadline, self.connect()).await {
                Ok(Ok(link)) => link,
                Ok(Err(e)) => {
                    self.health.down(&e);
                    return vec![Err(DeliveryError::Failed(e)); batch.len()];
                }
                Err(_) => {
                    let e = format!("amqp {url}: not connected within {timeout:?}");
                    self.health.down(&e);
                    return vec![Err(DeliveryError::Failed(e)); batch.len()];
                }
            },
        };
        // Publish the whole batch, then wait for the confirms in order.
        let options = BasicPublishOptions {
            mandatory: self.options.mandatory,
            ..Default::default()
        };
        let mut pending = Vec::with_capacity(batch.len());
        let mut broken = None;
        for record in batch {
            pending.push(match self.message(record) {
                Ok((exchange, routing_key, properties)) => {
                    match (link.channel)
                        .basic_publish(
                            exchange.clone(),
                            routing_key.clone(),
                            options,
                            &record.payload,
                            properties,
                        )
                        .await
                    {
                        Ok(confirm) => {
                            link.published += 1;
                            Ok((link.published, confirm, exchange, routing_key))
                        }
                        Err(e) => {
                            let reason = format!("amqp publish to {}: {e}", route(&exchange, &routing_key));
                            broken.get_or_insert(reason.clone());
                            Err(DeliveryError::Failed(reason))
                        }
                    }
                }
                Err(e) => Err(e),
            });
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut timed_out = false;
        for sent in pending {
            let (tag, confirm, exchange, routing_key) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    outcomes.push(Err(e));
                    continue;
                }
            };
            outcomes.push(match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(tag.to_string()),
                Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(DeliveryError::Failed(format!(
                    "amqp: no queue took the message ({}): {} {}",
                    route(&exchange, &routing_key),
                    returned.reply_code,
                    returned.reply_text
                ))),
                Ok(Ok(Confirmation::Nack(_))) => Err(DeliveryError::Failed(format!(
                    "amqp: the broker refused the message (nack; {})",
                    route(&exchange, &routing_key)
                ))),
                Ok(Err(e)) => {
                    let reason = format!("amqp publish to {}: {e}", route(&exchange, &routing_key));
                    broken.get_or_insert(reason.clone());
                    Err(DeliveryError::Failed(reason))
                }
                Err(_) => {
                    let reason = format!("amqp {url}: not confirmed within {timeout:?}");
                    timed_out = true;
                    broken.get_or_insert(reason.clone());
                    Err(DeliveryError::Failed(reason))
                }
            });
        }
        match broken {
            // A channel the broker closed (an unknown exchange, say) or a lost connection is
            // not used again: the next batch connects anew.
            Some(reason) => {
                tracing::warn!("{reason}; reconnecting at the next batch");
                // A channel error (an unknown exchange) says nothing of the broker's reach; a
                // broker that does not confirm (a resource alarm blocks publishers) is down.
                if link.connection.status().connected() && !timed_out {
                    self.health.up();
                } else {
                    self.health.down(&reason);
                }
            }
            None => {
                self.health.up();
                self.link = Some(link);
            }
        }
        outcomes
    }
}
