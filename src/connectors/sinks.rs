//! The sink runner: the queue in front of every sink, batching, retries with backoff (of what a
//! retry can help), dead letters, and the result that goes back to the filter that emitted a
//! record. A connector only says how a batch is delivered (`Deliver`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::template::Template;
use super::{Catalog, SinkKind, ws};
use crate::bus::Bus;
use crate::config::{Config, Delivery, SinkConfig};
use crate::health::{Health, PartHealth};
use crate::metrics::{Metrics, SinkMetrics};
use crate::types::{DeliveryError, Opcode, Outcome, Record, Reply};

/// Records a connector gets at once, at most.
pub const BATCH: usize = 256;

/// Fails every outcome still standing: the batch's last step (a flush, a round trip) failed.
pub fn fail_pending(outcomes: &mut [Outcome], reason: &str) {
    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
        *outcome = Err(DeliveryError::Failed(reason.to_string()));
    }
}

struct Envelope {
    record: Record,
    reply: Option<Reply>,
}

/// How a connector delivers. Records of one sink come in the order they were submitted, and
/// the next batch waits for this one: per-key order holds whatever the connector does inside.
pub trait Deliver: Send + 'static {
    /// Delivers a batch; one outcome per record, in order.
    fn deliver(&mut self, batch: &[Record]) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// A sink connector's parsed options: they make the connector when the sink starts.
pub trait SinkConnector: Send + Sync + 'static {
    /// What serde cannot check of the options; run when the config is loaded.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The sink's task: makes the connector (with what `start` offers) and runs it behind the
    /// runner with `start.run(connector)`.
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()>;
}

/// What a starting sink gets: its name and delivery mode, the proxy's parts a connector may
/// need, and the queue and policy the runner serves it with.
pub struct Start {
    pub name: Arc<str>,
    pub delivery: Delivery,
    context: SinkContext,
    queue: mpsc::Receiver<Envelope>,
    policy: PolicyConfig,
}

impl Start {
    /// The sink's health, as `/readyz` and `framegate_peer_up` show it.
    pub fn health(&self) -> PartHealth {
        self.context
            .health
            .part(format!("sinks.{}", self.name), &self.context.metrics)
    }

    pub fn bus(&self) -> Arc<Bus> {
        self.context.bus.clone()
    }

    /// Serves the sink's queue with `connector` until the queue closes.
    pub async fn run<D: Deliver>(self, connector: D) {
        let policy = Policy {
            metrics: self.context.metrics.sink(&self.name),
            name: self.name,
            templates: self.policy.templates,
            max_retries: self.policy.max_retries,
            backoff: self.policy.backoff,
            backoff_max: self.policy.backoff_max,
            dead_letter: self.policy.dead_letter,
        };
        run(connector, self.queue, policy).await
    }
}

/// The queue in front of a running sink.
pub struct SinkHandle {
    pub name: Arc<str>,
    config: SinkConfig,
    queue: mpsc::Sender<Envelope>,
}

impl SinkHandle {
    /// Queues a record, waiting for room: a full queue slows the connection feeding it.
    pub async fn submit(&self, record: Record, reply: Option<Reply>) {
        let reply = match (self.config.delivery, reply) {
            (Delivery::FireAndForget, Some(reply)) => {
                reply.send(Ok(String::new()));
                None
            }
            (_, reply) => reply,
        };
        if let Err(mpsc::error::SendError(envelope)) = self.queue.send(Envelope { record, reply }).await {
            let reason = format!("sink {} is shut down", self.name);
            tracing::warn!(conn = envelope.record.conn, "{reason}");
            if let Some(reply) = envelope.reply {
                reply.send(Err(DeliveryError::Failed(reason)));
            }
        }
    }
}

/// The key and headers every record of a sink gets from its templates (`key`, `headers`).
pub struct RecordTemplates {
    key: Option<Template>,
    headers: Vec<(String, Template)>,
}

impl RecordTemplates {
    pub fn new(sink: &SinkConfig) -> Result<RecordTemplates, String> {
        Ok(RecordTemplates {
            key: sink
                .key
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|e| format!("key: {e}"))?,
            headers: sink
                .headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), Template::parse(value)?)))
                .collect::<Result<_, String>>()
                .map_err(|e| format!("headers: {e}"))?,
        })
    }

    /// The record as the connector gets it; a template it cannot fill refuses it for good.
    fn apply(&self, record: &Record) -> Result<Record, DeliveryError> {
        let mut filled = record.clone();
        if let Some(key) = &self.key {
            filled.key = Some(key.render(record)?.into());
        }
        for (name, value) in &self.headers {
            filled.headers.push((name.clone(), value.render(record)?.into()));
        }
        Ok(filled)
    }
}

/// How the records of one sink are retried and where failures go, as configured.
struct PolicyConfig {
    templates: RecordTemplates,
    max_retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    dead_letter: Option<Arc<SinkHandle>>,
}

/// The policy of a running sink, with its metrics.
struct Policy {
    name: Arc<str>,
    templates: RecordTemplates,
    max_retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    dead_letter: Option<Arc<SinkHandle>>,
    metrics: SinkMetrics,
}

/// Delivers a batch, trying the records that failed again (but not those refused for good).
async fn deliver_with_retries<D: Deliver>(connector: &mut D, records: &[Record], policy: &Policy) -> Vec<Outcome> {
    let mut outcomes = connector.deliver(records).await;
    let mut backoff = policy.backoff;
    for _ in 0..policy.max_retries {
        let failed: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(&outcomes[i], Err(e) if e.is_retryable()))
            .collect();
        if failed.is_empty() {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(policy.backoff_max);
        policy.metrics.retried.inc_by(failed.len() as u64);
        let again: Vec<Record> = failed.iter().map(|&i| records[i].clone()).collect();
        for (i, outcome) in failed.into_iter().zip(connector.deliver(&again).await) {
            outcomes[i] = outcome;
        }
    }
    outcomes
}

async fn run<D: Deliver>(mut connector: D, mut queue: mpsc::Receiver<Envelope>, policy: Policy) {
    let mut envelopes = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut envelopes, BATCH).await > 0 {
        // The sink's templates first: a record they cannot fill is refused, the rest delivered.
        let mut outcomes = Vec::with_capacity(envelopes.len());
        let mut records = Vec::with_capacity(envelopes.len());
        let mut positions = Vec::with_capacity(envelopes.len());
        for (i, envelope) in envelopes.iter().enumerate() {
            match policy.templates.apply(&envelope.record) {
                Ok(record) => {
                    records.push(record);
                    positions.push(i);
                    outcomes.push(Ok(String::new()));
                }
                Err(reason) => outcomes.push(Err(reason)),
            }
        }
        if !records.is_empty() {
            let delivered = deliver_with_retries(&mut connector, &records, &policy).await;
            for (i, outcome) in positions.into_iter().zip(delivered) {
                outcomes[i] = outcome;
            }
        }
        for (envelope, outcome) in envelopes.drain(..).zip(outcomes) {
            match &outcome {
                Ok(_) => {
                    policy.metrics.delivered.inc();
                }
                Err(reason) => {
                    policy.metrics.failed.inc();
                    tracing::warn!(sink = &*policy.name, "record failed: {reason}");
                    if let Some(dead_letter) = &policy.dead_letter {
                        let mut record = envelope.record.clone();
                        record
                            .headers
                            .push(("framegate-error".into(), reason.to_string().into()));
                        record
                            .headers
                            .push(("framegate-sink".into(), policy.name.to_string().into()));
                        dead_letter.submit(record, None).await;
                        policy.metrics.dead_lettered.inc();
                    }
                }
            }
            if let Some(reply) = envelope.reply {
                reply.send(outcome);
            }
        }
    }
}

/// Everything sinks need from the rest of the proxy.
#[derive(Clone)]
pub struct SinkContext {
    pub bus: Arc<Bus>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub tasks: TaskTracker,
}

/// The sinks of one configuration. A reload keeps the running sinks whose config did not
/// change; new ones wait in `starting` until the whole config is built (`start`), so that a
/// config refused later starts nothing.
#[derive(Default)]
pub struct Sinks {
    queued: HashMap<String, Arc<SinkHandle>>,
    upstream: HashMap<String, Arc<ws::Upstream>>,
    starting: Vec<BoxFuture<'static, ()>>,
}

/// A sink as a route sees it.
#[derive(Clone)]
pub enum RouteSink {
    Queued(Arc<SinkHandle>),
    /// One upstream connection per client connection, relaying both ways.
    Upstream(Arc<str>, Arc<ws::Upstream>),
}

/// Why a config's sinks cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("sinks.{0}.dead_letter: dead letters go round in a circle: {1}")]
    DeadLetterCircle(String, String),
    #[error("sinks.{0}.dead_letter: {1:?} is a ws sink; it cannot take dead letters")]
    UpstreamDeadLetter(String, String),
    #[error("sinks.{0}: {1}")]
    Templates(String, String),
}

impl Sinks {
    /// The sinks of `config`, reusing `previous`'s where unchanged; nothing new runs yet.
    pub fn build(config: &Config, catalog: &Catalog, previous: &Sinks, ctx: &SinkContext) -> Result<Sinks, BuildError> {
        let mut sinks = Sinks::default();
        for name in config.sinks.keys() {
            sinks.prepare(name, config, catalog, previous, ctx, &mut Vec::new())?;
        }
        Ok(sinks)
    }

    /// Starts the sinks `build` made: the config they belong to is now the running one.
    pub fn start(&mut self, tasks: &TaskTracker) {
        for sink in self.starting.drain(..) {
            tasks.spawn(sink);
        }
    }

    fn prepare(
        &mut self,
        name: &str,
        config: &Config,
        catalog: &Catalog,
        previous: &Sinks,
        ctx: &SinkContext,
        visiting: &mut Vec<String>,
    ) -> Result<(), BuildError> {
        if self.queued.contains_key(name) || self.upstream.contains_key(name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            return Err(BuildError::DeadLetterCircle(name.into(), visiting.join(" -> ")));
        }
        let sink = &config.sinks[name];
        let connector = match &catalog.sinks[name] {
            SinkKind::Upstream(upstream) => {
                // The same options keep the same upstream, and so the routes using it.
                let kept = previous
                    .upstream
                    .get(name)
                    .filter(|old| old.options == upstream.options)
                    .unwrap_or(upstream);
                self.upstream.insert(name.into(), kept.clone());
                return Ok(());
            }
            SinkKind::Queued(connector) => connector.clone(),
        };
        let dead_letter = match &sink.dead_letter {
            Some(target) => {
                visiting.push(name.into());
                self.prepare(target, config, catalog, previous, ctx, visiting)?;
                visiting.pop();
                Some(
                    self.queued
                        .get(target)
                        .cloned()
                        .ok_or_else(|| BuildError::UpstreamDeadLetter(name.into(), target.clone()))?,
                )
            }
            None => None,
        };
        // Unchanged config and unchanged dead letter: the running sink carries on.
        if let Some(old) = previous.queued.get(name) {
            let same_dead_letter = match (&dead_letter, &sink.dead_letter) {
                (Some(new), Some(target)) => previous.queued.get(target).is_some_and(|o| Arc::ptr_eq(o, new)),
                _ => true,
            };
            if old.config == *sink && same_dead_letter {
                self.queued.insert(name.into(), old.clone());
                return Ok(());
            }
        }
        let (queue, receiver) = mpsc::channel(sink.queue);
        let start = Start {
            name: name.into(),
            delivery: sink.delivery,
            context: ctx.clone(),
            queue: receiver,
            policy: PolicyConfig {
                templates: RecordTemplates::new(sink).map_err(|e| BuildError::Templates(name.into(), e))?,
                max_retries: sink.max_retries,
                backoff: Duration::from_millis(sink.retry_backoff_ms),
                backoff_max: Duration::from_millis(sink.retry_backoff_max_ms),
                dead_letter,
            },
        };
        self.starting.push(connector.start(start));
        let handle = SinkHandle {
            name: name.into(),
            config: sink.clone(),
            queue,
        };
        self.queued.insert(name.into(), Arc::new(handle));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<RouteSink> {
        if let Some(handle) = self.queued.get(name) {
            return Some(RouteSink::Queued(handle.clone()));
        }
        self.upstream
            .get(name)
            .map(|upstream| RouteSink::Upstream(name.into(), upstream.clone()))
    }
}

/// A record as one JSON line, as the file and stdout sinks write it; `meta` names the metadata
/// keys to add (under `"meta"`, when there are any).
pub fn json_line(record: &Record, meta: &[String]) -> Vec<u8> {
    use base64::Engine;
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (opcode, payload) = match record.opcode {
        Opcode::Text => ("text", text(&record.payload)),
        Opcode::Binary => (
            "binary",
            base64::engine::general_purpose::STANDARD.encode(&record.payload),
        ),
    };
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), text(v).into()))
        .collect();
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut line = serde_json::json!({
        "ts_ms": ts_ms,
        "route": &*record.route,
        "conn": record.conn,
        "key": record.key.as_ref().map(text),
        "headers": headers,
        "opcode": opcode,
        "payload": payload,
    });
    if !meta.is_empty() {
        let values: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .filter_map(|key| Some((key.clone(), text(record.meta.get(key)?).into())))
            .collect();
        line["meta"] = values.into();
    }
    let mut bytes = serde_json::to_vec(&line).expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}
