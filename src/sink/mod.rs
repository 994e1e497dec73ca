//! Sinks: where records go. The shared part lives here: the record, the queue in front of
//! every sink, retries with backoff, dead letters, and the result that goes back to the filter
//! that emitted a record (the ticket). One file per connector says how records are delivered.

pub(crate) mod amqp;
mod bus;
mod file;
mod http;
mod kafka;
pub(crate) mod mqtt;
pub(crate) mod nats;
pub(crate) mod pulsar;
mod redis;
mod stdout;
mod template;
pub mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::{Config, Delivery, SinkConfig};
use crate::filter::abi::Opcode;
use crate::health::Health;
use crate::metrics::{Metrics, SinkMetrics};
use crate::session::meta::Meta;
use template::Template;

/// The connector types a `[sinks.NAME]` table can name.
pub const KINDS: &[&str] = &[
    "stdout",
    "file",
    "bus",
    "ws",
    "nats",
    "jetstream",
    "redis",
    "kafka",
    "amqp",
    "mqtt",
    "pulsar",
    "http",
];

/// Records a connector gets at once, at most.
const BATCH: usize = 256;

/// Checks a connector's own options, so that `framegate check` finds every mistake.
pub fn check_options(kind: &str, options: &toml::Table) -> Result<(), String> {
    match kind {
        "stdout" => parse::<stdout::Options>(options).map(drop),
        "file" => parse::<file::Options>(options).map(drop),
        "bus" => parse::<bus::Options>(options).map(drop),
        "ws" => parse::<ws::Options>(options).and_then(|o| o.check()),
        "nats" | "jetstream" => parse::<nats::Options>(options).map(drop),
        "redis" => parse::<redis::Options>(options).map(drop),
        "kafka" => parse::<kafka::Options>(options).map(drop),
        "amqp" => parse::<amqp::Options>(options).map(drop),
        "mqtt" => parse::<mqtt::Options>(options).and_then(|o| o.check()),
        "pulsar" => parse::<pulsar::Options>(options).map(drop),
        "http" => parse::<http::Options>(options).and_then(|o| o.check()),
        other => Err(format!("unknown sink type {other:?}")),
    }
}

pub(crate) fn parse<T: DeserializeOwned>(options: &toml::Table) -> Result<T, String> {
    toml::Value::Table(options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// One message on its way to a sink.
#[derive(Debug, Clone)]
pub struct Record {
    /// Unique in this process, the same for every attempt: brokers that deduplicate use it.
    pub id: u64,
    pub route: Arc<str>,
    pub conn: u64,
    pub opcode: Opcode,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// The connection's metadata when the record was made.
    pub meta: Meta,
}

impl Record {
    pub fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// The id, unique across restarts too: the process's start time, then the record's number.
    pub fn unique_id(&self) -> String {
        static BOOT: OnceLock<u128> = OnceLock::new();
        let boot = BOOT.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        format!("{boot:x}-{}", self.id)
    }
}

/// The outcome of one record: the peer's id of it, or why it failed.
pub type Outcome = Result<String, String>;

/// Fails every outcome still standing: the batch's last step (a flush, a round trip) failed.
fn fail_pending(outcomes: &mut [Outcome], reason: &str) {
    for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
        *outcome = Err(reason.to_string());
    }
}

/// Where a record's outcome goes: back to the filter that emitted it.
#[derive(Debug)]
pub struct Reply {
    pub to: mpsc::UnboundedSender<SinkResult>,
    pub ticket: u64,
    pub filter: usize,
    pub context: Bytes,
}

impl Reply {
    pub fn send(self, outcome: Outcome) {
        // The connection may be gone; then nobody waits for the outcome.
        let _ = self.to.send(SinkResult {
            ticket: self.ticket,
            filter: self.filter,
            context: self.context,
            outcome,
        });
    }
}

#[derive(Debug)]
pub struct SinkResult {
    pub ticket: u64,
    pub filter: usize,
    pub context: Bytes,
    pub outcome: Outcome,
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

/// A failure reason that starts with this is final: trying again cannot help (a template the
/// record cannot fill, a peer's final answer such as an HTTP 4xx), so the runner does not retry
/// it and the sink is not held up.
pub(crate) const FINAL: &str = "refused: ";

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
                reply.send(Err(reason));
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
    fn apply(&self, record: &Record) -> Result<Record, String> {
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

/// How the records of one sink are retried and where failures go.
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
            .filter(|&i| matches!(&outcomes[i], Err(reason) if !reason.starts_with(FINAL)))
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
                        record.headers.push(("framegate-error".into(), reason.clone().into()));
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

/// The sinks of one configuration. A reload keeps the running sinks whose config did not change.
#[derive(Default)]
pub struct Sinks {
    queued: HashMap<String, Arc<SinkHandle>>,
    upstream: HashMap<String, Arc<ws::Options>>,
}

/// A sink as a route sees it.
#[derive(Clone)]
pub enum RouteSink {
    Queued(Arc<SinkHandle>),
    /// One upstream connection per client connection, relaying both ways.
    Upstream(Arc<str>, Arc<ws::Options>),
}

impl Sinks {
    pub fn build(config: &Config, previous: &Sinks, ctx: &SinkContext) -> anyhow::Result<Sinks> {
        let mut sinks = Sinks::default();
        for name in config.sinks.keys() {
            sinks.start(name, config, previous, ctx, &mut Vec::new())?;
        }
        Ok(sinks)
    }

    fn start(
        &mut self,
        name: &str,
        config: &Config,
        previous: &Sinks,
        ctx: &SinkContext,
        visiting: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if self.queued.contains_key(name) || self.upstream.contains_key(name) {
            return Ok(());
        }
        if visiting.iter().any(|v| v == name) {
            anyhow::bail!(
                "sinks.{name}.dead_letter: dead letters go round in a circle: {}",
                visiting.join(" -> ")
            );
        }
        let sink = &config.sinks[name];
        if sink.kind == "ws" {
            self.upstream
                .insert(name.into(), Arc::new(parse(&sink.options).map_err(anyhow::Error::msg)?));
            return Ok(());
        }
        let dead_letter = match &sink.dead_letter {
            Some(target) => {
                visiting.push(name.into());
                self.start(target, config, previous, ctx, visiting)?;
                visiting.pop();
                Some(self.queued.get(target).cloned().ok_or_else(|| {
                    anyhow::anyhow!("sinks.{name}.dead_letter: {target:?} is a ws sink; it cannot take dead letters")
                })?)
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
        let policy = Policy {
            name: name.into(),
            templates: RecordTemplates::new(sink).map_err(|e| anyhow::anyhow!("sinks.{name}: {e}"))?,
            max_retries: sink.max_retries,
            backoff: Duration::from_millis(sink.retry_backoff_ms),
            backoff_max: Duration::from_millis(sink.retry_backoff_max_ms),
            dead_letter,
            metrics: ctx.metrics.sink(name),
        };
        let options = &sink.options;
        let bad = |e: String| anyhow::anyhow!("sinks.{name}: {e}");
        let health = || ctx.health.part(format!("sinks.{name}"), &ctx.metrics);
        match sink.kind.as_str() {
            "stdout" => {
                let options = parse(options).map_err(bad)?;
                ctx.tasks.spawn(run(stdout::Stdout { options }, receiver, policy));
            }
            "file" => {
                let file = file::File::new(name, parse(options).map_err(bad)?);
                ctx.tasks.spawn(run(file, receiver, policy));
            }
            "bus" => {
                let bus = bus::BusSink::new(ctx.bus.clone(), parse(options).map_err(bad)?);
                ctx.tasks.spawn(run(bus, receiver, policy));
            }
            kind @ ("nats" | "jetstream") => {
                let nats = nats::Nats::new(parse(options).map_err(bad)?, kind == "jetstream", health());
                ctx.tasks.spawn(run(nats, receiver, policy));
            }
            "redis" => {
                let redis = redis::Redis::new(parse(options).map_err(bad)?, health());
                ctx.tasks.spawn(run(redis, receiver, policy));
            }
            "kafka" => {
                let kafka = kafka::Kafka::new(parse(options).map_err(bad)?, health());
                ctx.tasks.spawn(run(kafka, receiver, policy));
            }
            "amqp" => {
                let amqp = amqp::Amqp::new(parse(options).map_err(bad)?, health());
                ctx.tasks.spawn(run(amqp, receiver, policy));
            }
            "mqtt" => {
                let mqtt = mqtt::Mqtt::new(parse(options).map_err(bad)?, sink.delivery, health()).map_err(bad)?;
                ctx.tasks.spawn(run(mqtt, receiver, policy));
            }
            "pulsar" => {
                let pulsar = pulsar::Pulsar::new(parse(options).map_err(bad)?, health());
                ctx.tasks.spawn(run(pulsar, receiver, policy));
            }
            "http" => {
                let http = http::Http::new(parse(options).map_err(bad)?, health()).map_err(bad)?;
                ctx.tasks.spawn(run(http, receiver, policy));
            }
            other => anyhow::bail!("sinks.{name}.type: unknown sink type {other:?}"),
        }
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
            .map(|options| RouteSink::Upstream(name.into(), options.clone()))
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
