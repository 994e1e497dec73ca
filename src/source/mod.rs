//! Sources: flows of messages towards connections, started by a filter's `subscribe`. The bus
//! is built in; brokers are configured as `[sources.NAME]` and run one subscription (a consumer)
//! per `subscribe`, with the options the filter passes as the spec. Each delivery carries an id
//! the filter acks or nacks; a connection that closes drops its subscriptions, which releases
//! the consumers. One file per connector says how it consumes.

mod amqp;
mod bus;
mod jetstream;
mod kafka;
mod mqtt;
mod nats;
mod pulsar;
mod redis;
pub mod ws;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::bus::Bus;
use crate::config::{Config, SourceConfig};
use crate::filter::abi::Opcode;
use crate::health::{Health, PartHealth};
use crate::metrics::{Metrics, SourceMetrics};
use crate::sink::Reply;

/// The connector types a `[sources.NAME]` table can name.
pub const KINDS: &[&str] = &["nats", "jetstream", "redis", "kafka", "amqp", "mqtt", "pulsar", "ws"];

/// The built-in source every configuration has.
pub const BUS: &str = "bus";

/// Checks a connector's own options, so that `framegate check` finds every mistake.
pub fn check_options(kind: &str, options: &toml::Table) -> Result<(), String> {
    match kind {
        "nats" => crate::sink::parse::<nats::Options>(options).map(drop),
        "jetstream" => crate::sink::parse::<jetstream::Options>(options).map(drop),
        "redis" => crate::sink::parse::<redis::Options>(options).map(drop),
        "kafka" => crate::sink::parse::<kafka::Options>(options).map(drop),
        "amqp" => crate::sink::parse::<amqp::Options>(options).map(drop),
        "mqtt" => crate::sink::parse::<mqtt::Options>(options).and_then(|o| o.check()),
        "pulsar" => crate::sink::parse::<pulsar::Options>(options).map(drop),
        "ws" => crate::sink::parse::<ws::Options>(options).and_then(|o| o.check()),
        other => Err(format!("unknown source type {other:?}")),
    }
}

/// A message on its way to a connection, from a subscription or an upstream.
#[derive(Debug)]
pub struct Delivered {
    /// The subscription; `None` for an upstream `ws` sink's traffic.
    pub sub: Option<u64>,
    pub source: Arc<str>,
    pub id: String,
    pub opcode: Opcode,
    pub payload: Bytes,
    /// What the broker tells of the message, shown to filters as `msg.NAME`: `key`, `topic`,
    /// `publish_time` (ms), `redelivery_count`, `header.NAME` and the connector's own.
    pub attrs: Vec<(String, Bytes)>,
}

/// A filter's verdict on a delivered message, by its id.
#[derive(Debug)]
pub enum Settle {
    Ack(String),
    Nack(String),
}

/// One subscription as its connector sees it: where messages go. Verdicts come on their own
/// channel, beside it.
pub struct Feed {
    pub sub: u64,
    pub source: Arc<str>,
    out: mpsc::Sender<Delivered>,
    pub health: PartHealth,
    metrics: SourceMetrics,
}

impl Feed {
    /// Hands a message to the connection, waiting while its queue is full (the broker is read
    /// no faster than the client takes messages). False once the connection is gone.
    pub async fn deliver(&self, id: String, opcode: Opcode, payload: Bytes, attrs: Vec<(String, Bytes)>) -> bool {
        let delivered = Delivered {
            sub: Some(self.sub),
            source: self.source.clone(),
            id,
            opcode,
            payload,
            attrs,
        };
        let sent = self.out.send(delivered).await.is_ok();
        if sent {
            self.metrics.delivered.inc();
        }
        sent
    }

    /// Counts a verdict the connector carried out.
    pub fn settled(&self, settle: &Settle) {
        match settle {
            Settle::Ack(_) => self.metrics.acked.inc(),
            Settle::Nack(_) => self.metrics.nacked.inc(),
        };
    }
}

/// Text payloads are UTF-8; anything else goes to the client as binary.
pub fn opcode_of(payload: &[u8]) -> Opcode {
    if std::str::from_utf8(payload).is_ok() {
        Opcode::Text
    } else {
        Opcode::Binary
    }
}

/// Reads a subscription spec: a JSON object of the connector's options, or a bare name that
/// stands for `{"<field>": name}` (a topic, a subject, a stream).
pub fn parse_spec<T: DeserializeOwned>(spec: &str, field: &str) -> Result<T, String> {
    let spec = spec.trim();
    let value = if spec.starts_with('{') {
        serde_json::from_str(spec).map_err(|e| format!("bad subscription spec: {e}"))?
    } else {
        serde_json::json!({ field: spec })
    };
    serde_json::from_value(value).map_err(|e| format!("bad subscription spec: {e}"))
}

/// A running subscription. Dropping it closes the verdict channel: the connector carries out
/// the verdicts still queued (a client's last acks count), releases its consumer and ends; one
/// that has not ended after `GRACE` is stopped.
pub struct Subscription {
    settle: mpsc::UnboundedSender<Settle>,
    _stop: DropGuard,
}

/// How long a dropped subscription may take to settle and let go.
const GRACE: Duration = Duration::from_secs(5);

impl Subscription {
    pub fn settle(&self, verdict: Settle) {
        // A subscription whose task ended has nobody to settle with.
        let _ = self.settle.send(verdict);
    }
}

/// A configured broker source.
enum Connector {
    Nats(Arc<nats::Options>),
    Jetstream(Arc<jetstream::Options>),
    Redis(Arc<redis::Options>),
    Kafka(Arc<kafka::Options>),
    Amqp(Arc<amqp::Options>),
    Mqtt(Arc<mqtt::Options>),
    Pulsar(Arc<pulsar::Options>),
}

struct Configured {
    config: SourceConfig,
    connector: Connector,
    health: PartHealth,
}

pub struct Sources {
    bus: Arc<Bus>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    bus_health: PartHealth,
    configured: ArcSwap<BTreeMap<String, Arc<Configured>>>,
}

impl Sources {
    pub fn new(bus: Arc<Bus>, metrics: Arc<Metrics>, health: Arc<Health>) -> Sources {
        Sources {
            bus,
            bus_health: health.part("sources.bus".into(), &metrics),
            metrics,
            health,
            configured: ArcSwap::default(),
        }
    }

    /// Makes a config's sources current. Live subscriptions keep the options they started with.
    pub fn apply(&self, config: &Config) -> anyhow::Result<()> {
        let previous = self.configured.load();
        let mut configured = BTreeMap::new();
        // A `ws` source feeds routes (src/feed.rs) rather than subscriptions.
        for (name, source) in config.sources.iter().filter(|(_, s)| s.kind != "ws") {
            if let Some(old) = previous.get(name).filter(|old| old.config == *source) {
                configured.insert(name.clone(), old.clone());
                continue;
            }
            let bad = |e: String| anyhow::anyhow!("sources.{name}: {e}");
            let options = &source.options;
            let connector = match source.kind.as_str() {
                "nats" => Connector::Nats(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                "jetstream" => Connector::Jetstream(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                "redis" => Connector::Redis(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                "kafka" => Connector::Kafka(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                "amqp" => Connector::Amqp(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                "mqtt" => {
                    let options: mqtt::Options = crate::sink::parse(options).map_err(bad)?;
                    options.check().map_err(bad)?;
                    Connector::Mqtt(Arc::new(options))
                }
                "pulsar" => Connector::Pulsar(Arc::new(crate::sink::parse(options).map_err(bad)?)),
                other => anyhow::bail!("sources.{name}.type: unknown source type {other:?}"),
            };
            let health = self.health.part(format!("sources.{name}"), &self.metrics);
            configured.insert(
                name.clone(),
                Arc::new(Configured {
                    config: source.clone(),
                    connector,
                    health,
                }),
            );
        }
        self.configured.store(Arc::new(configured));
        Ok(())
    }

    /// The names a filter may subscribe to.
    pub fn names(&self) -> Arc<[String]> {
        std::iter::once(BUS.to_string())
            .chain(self.configured.load().keys().cloned())
            .collect()
    }

    /// Starts a flow from `source` into `out`, tagged with `sub`. If it cannot start, or ends
    /// for good, the reason goes to `failed` (the filter's result hook, with `sub` as ticket).
    pub fn subscribe(
        &self,
        source: &str,
        spec: &str,
        sub: u64,
        out: mpsc::Sender<Delivered>,
        failed: Reply,
    ) -> Subscription {
        let (settle, verdicts) = mpsc::unbounded_channel();
        let configured = self.configured.load().get(source).cloned();
        let health = match &configured {
            Some(configured) => configured.health.clone(),
            None => self.bus_health.clone(),
        };
        let feed = Feed {
            sub,
            source: source.into(),
            out,
            health,
            metrics: self.metrics.source(source),
        };
        let spec = spec.to_string();
        let flow: Flow = match configured {
            _ if source == BUS => Box::pin(bus::run(self.bus.clone(), spec, feed, verdicts)),
            Some(configured) => match &configured.connector {
                Connector::Nats(options) => Box::pin(nats::run(options.clone(), spec, feed, verdicts)),
                Connector::Jetstream(options) => Box::pin(jetstream::run(options.clone(), spec, feed, verdicts)),
                Connector::Redis(options) => Box::pin(redis::run(options.clone(), spec, feed, verdicts)),
                Connector::Amqp(options) => Box::pin(amqp::run(options.clone(), spec, feed, verdicts)),
                Connector::Mqtt(options) => Box::pin(mqtt::run(options.clone(), spec, feed, verdicts)),
                Connector::Kafka(options) => Box::pin(kafka::run(options.clone(), spec, feed, verdicts)),
                Connector::Pulsar(options) => Box::pin(pulsar::run(options.clone(), spec, feed, verdicts)),
            },
            None => {
                let reason = format!("no source named {source:?}");
                Box::pin(async move { Err(reason) })
            }
        };
        let stop = CancellationToken::new();
        spawn(flow, failed, stop.clone());
        Subscription {
            settle,
            _stop: stop.drop_guard(),
        }
    }
}

type Flow = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs a subscription; when it ends with an error, the filter hears why.
fn spawn(flow: Flow, failed: Reply, stopped: CancellationToken) {
    tokio::spawn(async move {
        let deadline = async {
            stopped.cancelled().await;
            tokio::time::sleep(GRACE).await;
        };
        let ended = tokio::select! {
            ended = flow => ended,
            () = deadline => Ok(()),
        };
        if let Err(reason) = ended {
            tracing::warn!("subscription {} ended: {reason}", failed.ticket);
            failed.send(Err(reason));
        }
    });
}
