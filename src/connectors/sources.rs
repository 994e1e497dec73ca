//! Sources: flows of messages towards connections, started by a filter's `subscribe`. The bus
//! is built in; brokers are configured as `[sources.NAME]` and run one subscription (a consumer)
//! per `subscribe`, with the options the filter passes as the spec. Each delivery carries an id
//! the filter acks or nacks; a connection that closes drops its subscriptions, which releases
//! the consumers. Each connector's folder says how it consumes.

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

use super::{Catalog, SourceKind, bus};
use crate::bus::Bus;
use crate::config::{BUS_SOURCE, Config, SourceConfig};
use crate::health::{Health, PartHealth};
use crate::metrics::{Metrics, SourceMetrics};
use crate::types::{Delivered, DeliveryError, Opcode, Reply, Settle};

/// A source connector's parsed options: each `subscribe` starts a flow with them.
pub trait SourceConnector: Send + Sync + 'static {
    /// What serde cannot check of the options; run when the config is loaded.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// One subscription's flow: consumes `spec` into `feed`, carries out `verdicts`, ends when
    /// the verdict channel closes (or with the reason it cannot go on).
    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow;
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
struct Configured {
    config: SourceConfig,
    connector: Arc<dyn SourceConnector>,
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
            bus_health: health.part(format!("sources.{BUS_SOURCE}"), &metrics),
            metrics,
            health,
            configured: ArcSwap::default(),
        }
    }

    /// Makes a config's broker sources current (their options were parsed with the config).
    /// Live subscriptions keep the options they started with.
    pub fn apply(&self, config: &Config, catalog: &Catalog) {
        let previous = self.configured.load();
        let mut configured = BTreeMap::new();
        for (name, kind) in &catalog.sources {
            // A `ws` source feeds routes (src/feed.rs) rather than subscriptions.
            let SourceKind::Subscribed(connector) = kind else {
                continue;
            };
            let source = &config.sources[name];
            if let Some(old) = previous.get(name).filter(|old| old.config == *source) {
                configured.insert(name.clone(), old.clone());
                continue;
            }
            let health = self.health.part(format!("sources.{name}"), &self.metrics);
            configured.insert(
                name.clone(),
                Arc::new(Configured {
                    config: source.clone(),
                    connector: connector.clone(),
                    health,
                }),
            );
        }
        self.configured.store(Arc::new(configured));
    }

    /// The names a filter may subscribe to.
    pub fn names(&self) -> Arc<[String]> {
        std::iter::once(BUS_SOURCE.to_string())
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
            _ if source == BUS_SOURCE => Box::pin(bus::run(self.bus.clone(), spec, feed, verdicts)),
            Some(configured) => configured.connector.clone().subscribe(spec, feed, verdicts),
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

/// A running subscription's task.
pub type Flow = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

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
            failed.send(Err(DeliveryError::Failed(reason)));
        }
    });
}
