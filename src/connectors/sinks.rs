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
    /// The sink's `type`.
    pub fn kind(&self) -> &str {
        &self.config.kind
    }

    /// Records waiting in the queue, and its size.
    pub fn queued(&self) -> (usize, usize) {
        let size = self.queue.max_capacity();
        (size - self.queue.capacity(), size)
    }

    /// Queues a record, waiting for room: a full queue slows the connection feeding it.
    pub async fn submit(&self, record: Record, reply: Option<Reply>) {
        self.enqueue(self.envelope(record, reply)).await;
    }

    /// Queues a record now if the queue has room and no record waits before it in `waiting`;
    /// otherwise the record joins `waiting`, whose records `Waiting::queue` queues one by one,
    /// in order, waiting for room. A session handles a message without waiting, and queues
    /// what waits before it writes to its client again.
    pub fn submit_or_wait(self: &Arc<Self>, record: Record, reply: Option<Reply>, waiting: &mut Vec<Waiting>) {
        let envelope = self.envelope(record, reply);
        let envelope = if waiting.is_empty() {
            match self.queue.try_send(envelope) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(envelope)) => return self.shut_down(envelope),
                Err(mpsc::error::TrySendError::Full(envelope)) => envelope,
            }
        } else {
            envelope
        };
        waiting.push(Waiting {
            sink: self.clone(),
            envelope,
        });
    }

    /// A record and its reply as the queue takes them: a fire-and-forget sink answers at once.
    fn envelope(&self, record: Record, reply: Option<Reply>) -> Envelope {
        let reply = match (self.config.delivery, reply) {
            (Delivery::FireAndForget, Some(reply)) => {
                reply.send(Ok(String::new()));
                None
            }
            (_, reply) => reply,
        };
        Envelope { record, reply }
    }

    async fn enqueue(&self, envelope: Envelope) {
        if let Err(mpsc::error::SendError(envelope)) = self.queue.send(envelope).await {
            self.shut_down(envelope);
        }
    }

    fn shut_down(&self, envelope: Envelope) {
        let reason = format!("sink {} is shut down", self.name);
        tracing::warn!(conn = envelope.record.conn, "{reason}");
        if let Some(reply) = envelope.reply {
            reply.send(Err(DeliveryError::Failed(reason)));
        }
    }
}

/// A record its sink's queue had no room for when it came (`SinkHandle::submit_or_wait`).
pub struct Waiting {
    sink: Arc<SinkHandle>,
    envelope: Envelope,
}

impl Waiting {
    /// Queues the record, waiting for room.
    pub async fn queue(self) {
        self.sink.enqueue(self.envelope).await;
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

/// One attempt at a batch: exactly one outcome per record, so a connector that answers for fewer
/// records than it was given cannot have the rest counted as delivered.
async fn deliver_once<D: Deliver>(connector: &mut D, records: &[Record]) -> Vec<Outcome> {
    let mut outcomes = connector.deliver(records).await;
    outcomes.resize_with(records.len(), || {
        Err(DeliveryError::Failed(
            "the connector gave no outcome for the record".into(),
        ))
    });
    outcomes
}

/// Delivers a batch, trying the records that failed again (but not those refused for good).
async fn deliver_with_retries<D: Deliver>(connector: &mut D, records: &[Record], policy: &Policy) -> Vec<Outcome> {
    let mut outcomes = deliver_once(connector, records).await;
    let mut backoff = policy.backoff.min(policy.backoff_max);
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
        for (i, outcome) in failed.into_iter().zip(deliver_once(connector, &again).await) {
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
            let circle = [visiting.as_slice(), &[name.to_string()]].concat();
            return Err(BuildError::DeadLetterCircle(name.into(), circle.join(" -> ")));
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use tokio::sync::mpsc::error::TryRecvError;
    use tokio::time::Instant;

    use super::*;
    use crate::types::SinkResult;

    /// A text record of route `in`, connection 7, without metadata.
    fn record(payload: &str) -> Record {
        Record {
            id: Record::next_id(),
            route: "in".into(),
            conn: 7,
            opcode: Opcode::Text,
            key: None,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            headers: vec![],
            meta: Arc::default(),
        }
    }

    fn text(bytes: &Bytes) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn payloads(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| text(&r.payload)).collect()
    }

    /// One call of `Deliver::deliver`: when, and what it was given.
    struct Attempt {
        at: Instant,
        records: Vec<Record>,
    }

    /// A connector whose outcomes are scripted per payload (one per attempt, then `Ok("id-P")`)
    /// and that logs every batch it is given.
    #[derive(Default)]
    struct Scripted {
        log: Arc<Mutex<Vec<Attempt>>>,
        script: HashMap<String, VecDeque<Outcome>>,
    }

    impl Scripted {
        fn on(mut self, payload: &str, outcomes: impl IntoIterator<Item = Outcome>) -> Scripted {
            self.script.insert(payload.into(), outcomes.into_iter().collect());
            self
        }

        fn log(&self) -> Arc<Mutex<Vec<Attempt>>> {
            self.log.clone()
        }
    }

    impl Deliver for Scripted {
        async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
            self.log.lock().unwrap().push(Attempt {
                at: Instant::now(),
                records: batch.to_vec(),
            });
            batch
                .iter()
                .map(|r| {
                    let payload = text(&r.payload);
                    self.script
                        .get_mut(&payload)
                        .and_then(VecDeque::pop_front)
                        .unwrap_or_else(|| Ok(format!("id-{payload}")))
                })
                .collect()
        }
    }

    /// The payloads of each batch the connector was given.
    fn batches(log: &Mutex<Vec<Attempt>>) -> Vec<Vec<String>> {
        log.lock().unwrap().iter().map(|a| payloads(&a.records)).collect()
    }

    fn failed(reason: &str) -> Outcome {
        Err(DeliveryError::Failed(reason.into()))
    }

    fn sink_config() -> SinkConfig {
        SinkConfig {
            kind: "stdout".into(),
            delivery: Delivery::Confirmed,
            queue: 16,
            max_retries: 3,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            dead_letter: None,
            key: None,
            headers: BTreeMap::new(),
            options: toml::Table::new(),
        }
    }

    /// The policy of sink `main`: 3 retries, 100 ms doubling up to 1 s, no templates, no dead
    /// letters; and its metrics, shared with it.
    fn policy() -> (Policy, SinkMetrics) {
        let metrics = Metrics::default().sink("main");
        let policy = Policy {
            name: "main".into(),
            templates: RecordTemplates::new(&sink_config()).unwrap(),
            max_retries: 3,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1_000),
            dead_letter: None,
            metrics: metrics.clone(),
        };
        (policy, metrics)
    }

    fn reply(ticket: u64, to: &mpsc::UnboundedSender<SinkResult>) -> Reply {
        Reply {
            to: to.clone(),
            ticket,
            filter: 1,
            context: Bytes::from(format!("ctx-{ticket}")),
        }
    }

    /// A closed queue holding `records` in order, each with a reply whose ticket is its
    /// position; and where the replies go.
    fn queued(records: Vec<Record>) -> (mpsc::Receiver<Envelope>, mpsc::UnboundedReceiver<SinkResult>) {
        let (queue, receiver) = mpsc::channel(records.len().max(1));
        let (to, results) = mpsc::unbounded_channel();
        for (i, record) in records.into_iter().enumerate() {
            let reply = Some(reply(i as u64, &to));
            queue.try_send(Envelope { record, reply }).unwrap();
        }
        (receiver, results)
    }

    /// Every reply sent so far, in the order sent.
    fn replies(results: &mut mpsc::UnboundedReceiver<SinkResult>) -> Vec<SinkResult> {
        let mut all = Vec::new();
        while let Ok(result) = results.try_recv() {
            all.push(result);
        }
        all
    }

    fn outcomes(results: &mut mpsc::UnboundedReceiver<SinkResult>) -> Vec<Outcome> {
        replies(results).into_iter().map(|r| r.outcome).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn batches_keep_submission_order_and_replies_follow_it() {
        let total = 2 * BATCH + 10;
        let records: Vec<Record> = (0..total).map(|i| record(&i.to_string())).collect();
        let (queue, mut results) = queued(records);
        let connector = Scripted::default();
        let log = connector.log();
        let (policy, metrics) = policy();
        run(connector, queue, policy).await;

        let seen = batches(&log);
        assert_eq!(
            seen.iter().map(Vec::len).collect::<Vec<_>>(),
            [BATCH, BATCH, 10],
            "at most BATCH records at once"
        );
        let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
        assert_eq!(seen.concat(), expected);

        let replies = replies(&mut results);
        assert_eq!(replies.len(), total);
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(reply.ticket, i as u64);
            assert_eq!(reply.filter, 1);
            assert_eq!(reply.context, Bytes::from(format!("ctx-{i}")));
            assert_eq!(reply.outcome, Ok(format!("id-{i}")));
        }
        assert_eq!(metrics.delivered.get(), total as u64);
        assert_eq!((metrics.failed.get(), metrics.retried.get()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn records_submitted_while_running_keep_their_order() {
        let (queue, receiver) = mpsc::channel(4);
        let handle = SinkHandle {
            name: "main".into(),
            config: sink_config(),
            queue,
        };
        let connector = Scripted::default();
        let log = connector.log();
        let (policy, _) = policy();
        let runner = tokio::spawn(run(connector, receiver, policy));
        let (to, mut results) = mpsc::unbounded_channel();
        for i in 0..20u64 {
            handle.submit(record(&i.to_string()), Some(reply(i, &to))).await;
        }
        drop(handle);
        runner.await.unwrap();

        let seen = batches(&log);
        assert!(
            seen.iter().all(|b| b.len() <= 4),
            "a batch is at most the queue: {seen:?}"
        );
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(seen.concat(), expected);
        let tickets: Vec<u64> = replies(&mut results).iter().map(|r| r.ticket).collect();
        assert_eq!(tickets, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn only_failed_records_are_retried_with_doubling_backoff() {
        let connector = Scripted::default()
            .on("a", [failed("down")])
            .on("c", [failed("down"), failed("still down")]);
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("a"), record("b"), record("c")]);
        let (policy, metrics) = policy();
        run(connector, queue, policy).await;

        assert_eq!(batches(&log), [vec!["a", "b", "c"], vec!["a", "c"], vec!["c"]]);
        let log = log.lock().unwrap();
        let pauses: Vec<Duration> = log.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert_eq!(pauses, [Duration::from_millis(100), Duration::from_millis(200)]);
        // Every attempt carries the same record (its id is what brokers deduplicate on).
        assert_eq!(log[0].records[2].id, log[2].records[0].id);
        assert_eq!(
            outcomes(&mut results),
            [Ok("id-a".to_string()), Ok("id-b".to_string()), Ok("id-c".to_string())]
        );
        assert_eq!(metrics.retried.get(), 3, "a once, c twice");
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_stops_doubling_at_its_max() {
        let connector = Scripted::default().on("a", std::iter::repeat_n(failed("down"), 10));
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("a")]);
        let (mut policy, _) = policy();
        policy.max_retries = 4;
        policy.backoff_max = Duration::from_millis(250);
        run(connector, queue, policy).await;

        let log = log.lock().unwrap();
        let pauses: Vec<u64> = log.windows(2).map(|w| (w[1].at - w[0].at).as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 250, 250]);
        assert_eq!(outcomes(&mut results), [failed("down")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_backoff_above_its_max_waits_only_the_max() {
        let connector = Scripted::default().on("a", [failed("down"), failed("down")]);
        let log = connector.log();
        let (queue, _results) = queued(vec![record("a")]);
        let (mut policy, _) = policy();
        policy.max_retries = 2;
        policy.backoff = Duration::from_millis(900);
        policy.backoff_max = Duration::from_millis(300);
        run(connector, queue, policy).await;

        let log = log.lock().unwrap();
        let pauses: Vec<u64> = log.windows(2).map(|w| (w[1].at - w[0].at).as_millis() as u64).collect();
        assert_eq!(pauses, [300, 300]);
    }

    /// A connector that answers for the first record of each batch only.
    struct AnswersOne;

    impl Deliver for AnswersOne {
        async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
            batch
                .iter()
                .take(1)
                .map(|r| Ok(format!("id-{}", text(&r.payload))))
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_a_connector_gave_no_outcome_for_fail_rather_than_pass() {
        let (queue, mut results) = queued(vec![record("a"), record("b")]);
        let (mut policy, metrics) = policy();
        policy.max_retries = 0;
        run(AnswersOne, queue, policy).await;

        assert_eq!(
            outcomes(&mut results),
            [
                Ok("id-a".to_string()),
                failed("the connector gave no outcome for the record")
            ]
        );
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_never_retried() {
        let connector = Scripted::default()
            .on("bad", [Err(DeliveryError::Refused("too big".into()))])
            .on("flaky", [failed("down")]);
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("bad"), record("flaky")]);
        let (policy, metrics) = policy();
        run(connector, queue, policy).await;

        assert_eq!(batches(&log), [vec!["bad", "flaky"], vec!["flaky"]]);
        let outcomes = outcomes(&mut results);
        assert_eq!(
            outcomes,
            [
                Err(DeliveryError::Refused("too big".into())),
                Ok("id-flaky".to_string())
            ]
        );
        assert_eq!(outcomes[0].as_ref().unwrap_err().to_string(), "refused: too big");
        assert_eq!(metrics.retried.get(), 1);
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_retries_fail_the_record() {
        let connector = Scripted::default().on("a", std::iter::repeat_n(failed("down"), 10));
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("a"), record("b")]);
        let (mut policy, metrics) = policy();
        policy.max_retries = 2;
        run(connector, queue, policy).await;

        assert_eq!(
            batches(&log),
            [vec!["a", "b"], vec!["a"], vec!["a"]],
            "first try and 2 retries"
        );
        assert_eq!(outcomes(&mut results), [failed("down"), Ok("id-b".to_string())]);
        assert_eq!(metrics.retried.get(), 2);
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (1, 1));
        assert_eq!(metrics.dead_lettered.get(), 0, "no dead letter sink");
    }

    #[tokio::test(start_paused = true)]
    async fn no_retries_means_one_attempt() {
        let connector = Scripted::default().on("a", [failed("down")]);
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("a")]);
        let (mut policy, metrics) = policy();
        policy.max_retries = 0;
        run(connector, queue, policy).await;

        assert_eq!(batches(&log), [vec!["a"]]);
        assert_eq!(outcomes(&mut results), [failed("down")]);
        assert_eq!(metrics.retried.get(), 0);
    }

    /// A dead letter sink whose queue the test reads.
    fn dead_letter_sink() -> (Arc<SinkHandle>, mpsc::Receiver<Envelope>) {
        let (queue, receiver) = mpsc::channel(16);
        let handle = SinkHandle {
            name: "dlq".into(),
            config: sink_config(),
            queue,
        };
        (Arc::new(handle), receiver)
    }

    fn header<'a>(record: &'a Record, name: &str) -> Option<&'a Bytes> {
        record.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[tokio::test(start_paused = true)]
    async fn failures_go_to_the_dead_letter_sink_with_the_reason() {
        let connector = Scripted::default()
            .on("a", std::iter::repeat_n(failed("broker down"), 10))
            .on("r", [Err(DeliveryError::Refused("no such topic".into()))]);
        let (dead_letter, mut dead) = dead_letter_sink();
        let mut a = record("a");
        a.headers.push(("x-own".into(), "kept".into()));
        let a_id = a.id;
        let (queue, mut results) = queued(vec![a, record("b"), record("r")]);
        let (mut policy, metrics) = policy();
        policy.max_retries = 1;
        policy.dead_letter = Some(dead_letter);
        run(connector, queue, policy).await;

        assert_eq!(
            outcomes(&mut results),
            [
                failed("broker down"),
                Ok("id-b".to_string()),
                Err(DeliveryError::Refused("no such topic".into()))
            ]
        );
        let first = dead.try_recv().expect("the failed record is dead-lettered");
        assert!(first.reply.is_none(), "a dead letter's outcome goes nowhere");
        assert_eq!((first.record.id, text(&first.record.payload)), (a_id, "a".to_string()));
        assert_eq!(header(&first.record, "x-own"), Some(&Bytes::from("kept")));
        assert_eq!(
            header(&first.record, "framegate-error"),
            Some(&Bytes::from("broker down"))
        );
        assert_eq!(header(&first.record, "framegate-sink"), Some(&Bytes::from("main")));
        let second = dead.try_recv().expect("the refused record is dead-lettered");
        assert_eq!(text(&second.record.payload), "r");
        assert_eq!(
            header(&second.record, "framegate-error"),
            Some(&Bytes::from("refused: no such topic"))
        );
        assert_eq!(header(&second.record, "framegate-sink"), Some(&Bytes::from("main")));
        assert!(
            matches!(dead.try_recv(), Err(TryRecvError::Disconnected)),
            "nothing else, and the runner let go of the dead letter sink"
        );
        assert_eq!(metrics.dead_lettered.get(), 2);
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn records_a_template_cannot_fill_are_refused_before_the_connector() {
        let mut config = sink_config();
        config.key = Some("{meta.tenant}".into());
        config.headers.insert("x-tenant".into(), "t-{meta.tenant}".into());
        let mut tenant = record("acme's");
        tenant.meta = Arc::new(BTreeMap::from([("tenant".to_string(), Bytes::from("acme"))]));
        let connector = Scripted::default();
        let log = connector.log();
        let (dead_letter, mut dead) = dead_letter_sink();
        let (queue, mut results) = queued(vec![record("nobody's"), tenant, record("nobody's either")]);
        let (mut policy, metrics) = policy();
        policy.templates = RecordTemplates::new(&config).unwrap();
        policy.dead_letter = Some(dead_letter);
        run(connector, queue, policy).await;

        assert_eq!(
            batches(&log),
            [vec!["acme's"]],
            "the connector sees only what it can deliver"
        );
        let given = &log.lock().unwrap()[0].records[0];
        assert_eq!(given.key, Some(Bytes::from("acme")));
        assert_eq!(given.headers, [("x-tenant".to_string(), Bytes::from("t-acme"))]);
        let refused = Err(DeliveryError::Refused(
            "\"{meta.tenant}\": the record has no metadata \"tenant\"".into(),
        ));
        assert_eq!(
            outcomes(&mut results),
            [refused.clone(), Ok("id-acme's".to_string()), refused]
        );
        assert_eq!(metrics.retried.get(), 0);
        assert_eq!((metrics.delivered.get(), metrics.failed.get()), (1, 2));
        let first = dead.try_recv().unwrap();
        assert_eq!(text(&first.record.payload), "nobody's");
        assert_eq!(
            header(&first.record, "framegate-error"),
            Some(&Bytes::from(
                "refused: \"{meta.tenant}\": the record has no metadata \"tenant\""
            ))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_templates_refuse_entirely_never_reaches_the_connector() {
        let mut config = sink_config();
        config.key = Some("{meta.tenant}".into());
        let connector = Scripted::default();
        let log = connector.log();
        let (queue, mut results) = queued(vec![record("a"), record("b")]);
        let (mut policy, _) = policy();
        policy.templates = RecordTemplates::new(&config).unwrap();
        run(connector, queue, policy).await;

        assert!(log.lock().unwrap().is_empty());
        let outcomes = outcomes(&mut results);
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes.iter().all(|o| matches!(o, Err(DeliveryError::Refused(_)))),
            "{outcomes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fire_and_forget_replies_when_queued_and_a_closed_queue_fails() {
        let (queue, mut receiver) = mpsc::channel(4);
        let mut config = sink_config();
        config.delivery = Delivery::FireAndForget;
        let handle = SinkHandle {
            name: "main".into(),
            config,
            queue,
        };
        let (to, mut results) = mpsc::unbounded_channel();
        handle.submit(record("a"), Some(reply(0, &to))).await;
        let results_now = outcomes(&mut results);
        assert_eq!(results_now, [Ok(String::new())], "answered before any delivery");
        let queued = receiver.try_recv().unwrap();
        assert!(queued.reply.is_none(), "the runner has nobody to answer");
        assert_eq!(text(&queued.record.payload), "a");

        let (queue, receiver) = mpsc::channel(4);
        let handle = SinkHandle {
            name: "gone".into(),
            config: sink_config(),
            queue,
        };
        drop(receiver);
        handle.submit(record("b"), Some(reply(1, &to))).await;
        assert_eq!(outcomes(&mut results), [failed("sink gone is shut down")]);
    }

    #[tokio::test]
    async fn a_full_queue_keeps_records_waiting_in_order_until_there_is_room() {
        let (queue, mut receiver) = mpsc::channel(1);
        let handle = Arc::new(SinkHandle {
            name: "main".into(),
            config: sink_config(),
            queue,
        });
        let mut waiting = Vec::new();
        handle.submit_or_wait(record("a"), None, &mut waiting);
        handle.submit_or_wait(record("b"), None, &mut waiting); // the queue is full
        assert_eq!(waiting.len(), 1);
        assert_eq!(text(&receiver.recv().await.unwrap().record.payload), "a");
        // Room now, but "b" waits before it: "c" goes behind it, not past it.
        handle.submit_or_wait(record("c"), None, &mut waiting);
        assert_eq!(waiting.len(), 2);
        assert!(receiver.try_recv().is_err());
        let queued = tokio::spawn(async move {
            for record in waiting {
                record.queue().await;
            }
        });
        let mut order = Vec::new();
        for _ in 0..2 {
            order.push(text(&receiver.recv().await.unwrap().record.payload));
        }
        queued.await.unwrap();
        assert_eq!(order, ["b", "c"]);
    }

    fn context() -> SinkContext {
        let metrics = Arc::new(Metrics::default());
        SinkContext {
            bus: Bus::new(metrics.clone()),
            metrics,
            health: Arc::new(Health::default()),
            tasks: TaskTracker::new(),
        }
    }

    fn parse(toml: &str) -> (Config, Catalog) {
        let config = Config::parse(toml, "test.toml").unwrap();
        let catalog = Catalog::parse(&config).unwrap();
        (config, catalog)
    }

    const BUS_SINK: &str = "[sinks.events]\ntype = \"bus\"\ntopic = \"events\"\n";

    #[tokio::test(start_paused = true)]
    async fn built_sinks_deliver_only_once_started() {
        let (config, catalog) = parse(BUS_SINK);
        let ctx = context();
        let mut sinks = Sinks::build(&config, &catalog, &Sinks::default(), &ctx).unwrap();
        let mut subscriber = ctx.bus.subscribe("events", crate::types::Backlog::new(1 << 20));
        let Some(RouteSink::Queued(handle)) = sinks.get("events") else {
            panic!("a bus sink is queued");
        };
        assert_eq!(&*handle.name, "events");
        assert!(sinks.get("nope").is_none());
        let (to, mut results) = mpsc::unbounded_channel();
        handle.submit(record("hello"), Some(reply(5, &to))).await;

        let early = tokio::time::timeout(Duration::from_secs(10), subscriber.next()).await;
        assert!(early.is_err(), "delivered before start");
        assert!(matches!(results.try_recv(), Err(TryRecvError::Empty)));

        sinks.start(&ctx.tasks);
        assert!(sinks.starting.is_empty(), "started once");
        let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .expect("delivered once started")
            .unwrap()
            .0;
        assert_eq!((message.seq, message.opcode), (1, Opcode::Text));
        assert_eq!(message.payload, Bytes::from("hello"));
        let result = results.recv().await.unwrap();
        assert_eq!(result.ticket, 5);
        assert_eq!(result.outcome, Ok("1".to_string()), "one subscriber got it");
        assert_eq!(ctx.metrics.sink("events").delivered.get(), 1);

        // The sink's task ends once nothing can submit to it any more.
        drop((handle, sinks));
        ctx.tasks.close();
        tokio::time::timeout(Duration::from_secs(10), ctx.tasks.wait())
            .await
            .expect("the sink's task ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuild_keeps_unchanged_sinks_and_replaces_changed_ones() {
        let two = format!("{BUS_SINK}[sinks.other]\ntype = \"bus\"\ntopic = \"other\"\n");
        let (config, catalog) = parse(&two);
        let ctx = context();
        let first = Sinks::build(&config, &catalog, &Sinks::default(), &ctx).unwrap();
        assert_eq!(first.starting.len(), 2);
        let queued = |sinks: &Sinks, name: &str| match sinks.get(name) {
            Some(RouteSink::Queued(handle)) => handle,
            _ => panic!("{name} is queued"),
        };

        let (config, catalog) = parse(&two.replace("topic = \"other\"", "topic = \"renamed\""));
        let second = Sinks::build(&config, &catalog, &first, &ctx).unwrap();
        assert!(Arc::ptr_eq(&queued(&first, "events"), &queued(&second, "events")));
        assert!(!Arc::ptr_eq(&queued(&first, "other"), &queued(&second, "other")));
        assert_eq!(second.starting.len(), 1, "only the changed sink starts");
    }

    #[test]
    fn a_dead_letter_circle_is_refused() {
        let (config, catalog) = parse(
            "[sinks.a]\ntype = \"stdout\"\ndead_letter = \"b\"\n\
             [sinks.b]\ntype = \"stdout\"\ndead_letter = \"a\"\n",
        );
        let error = Sinks::build(&config, &catalog, &Sinks::default(), &context())
            .err()
            .expect("a circle is refused");
        assert!(
            matches!(&error, BuildError::DeadLetterCircle(name, path) if name == "a" && path == "a -> b -> a"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "sinks.a.dead_letter: dead letters go round in a circle: a -> b -> a"
        );
    }

    #[test]
    fn a_dead_letter_chain_is_built() {
        let (config, catalog) = parse(
            "[sinks.a]\ntype = \"stdout\"\ndead_letter = \"b\"\n\
             [sinks.b]\ntype = \"stdout\"\ndead_letter = \"c\"\n\
             [sinks.c]\ntype = \"stdout\"\n",
        );
        let sinks = Sinks::build(&config, &catalog, &Sinks::default(), &context()).unwrap();
        assert_eq!(sinks.starting.len(), 3, "each sink built once");
    }

    #[test]
    fn a_ws_sink_cannot_take_dead_letters() {
        let (config, catalog) = parse(
            "[sinks.a]\ntype = \"stdout\"\ndead_letter = \"up\"\n\
             [sinks.up]\ntype = \"ws\"\nurl = \"ws://127.0.0.1:1/\"\n",
        );
        let error = Sinks::build(&config, &catalog, &Sinks::default(), &context())
            .err()
            .expect("refused");
        assert!(
            matches!(&error, BuildError::UpstreamDeadLetter(name, target) if name == "a" && target == "up"),
            "{error:?}"
        );
    }
}
