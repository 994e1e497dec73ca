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
use crate::types::{Backlog, Delivered, DeliveryError, Held, Opcode, Reply, Settle};

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
    /// The connection's backlog: a message waits for room in it before it is handed over.
    backlog: Backlog,
    pub health: PartHealth,
    metrics: SourceMetrics,
}

impl Feed {
    /// Hands a message to the connection, waiting while its queue is full (the broker is read
    /// no faster than the client takes messages). False once the connection is gone.
    pub async fn deliver(&self, id: String, opcode: Opcode, payload: Bytes, attrs: Vec<(String, Bytes)>) -> bool {
        let held = self.backlog.hold(payload.len()).await;
        self.deliver_held(id, opcode, payload, attrs, held).await
    }

    /// Hands over a message that already holds its room in the connection's backlog.
    pub async fn deliver_held(
        &self,
        id: String,
        opcode: Opcode,
        payload: Bytes,
        attrs: Vec<(String, Bytes)>,
        held: Held,
    ) -> bool {
        let delivered = Delivered {
            sub: Some(self.sub),
            source: self.source.clone(),
            id,
            opcode,
            payload,
            attrs,
            held: Some(held),
        };
        let sent = self.out.send(delivered).await.is_ok();
        if sent {
            self.metrics.delivered.inc();
        }
        sent
    }

    pub fn backlog(&self) -> &Backlog {
        &self.backlog
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
        backlog: Backlog,
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
            backlog,
            health,
            metrics: self.metrics.source(source),
        };
        let spec = spec.trim().to_string();
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use tokio::sync::mpsc::error::TryRecvError;
    use tokio::time::Instant;

    use super::*;
    use crate::types::SinkResult;

    /// Waits for `what`, failing the test rather than hanging (the clock is paused: a wait
    /// nothing can end fails at once).
    async fn within<T>(what: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), what)
            .await
            .expect("timed out")
    }

    /// Lets spawned tasks run until they wait for something.
    async fn let_run() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// The failure hook of subscription `ticket`, and what reaches it.
    fn failed(ticket: u64) -> (Reply, mpsc::UnboundedReceiver<SinkResult>) {
        let (to, results) = mpsc::unbounded_channel();
        let reply = Reply {
            to,
            ticket,
            filter: 3,
            context: Bytes::from_static(b"sub-context"),
        };
        (reply, results)
    }

    struct Parts {
        bus: Arc<Bus>,
        metrics: Arc<Metrics>,
        sources: Sources,
    }

    fn parts() -> Parts {
        let metrics = Arc::new(Metrics::default());
        let bus = Bus::new(metrics.clone());
        let sources = Sources::new(bus.clone(), metrics.clone(), Arc::new(Health::default()));
        Parts { bus, metrics, sources }
    }

    #[tokio::test(start_paused = true)]
    async fn a_bus_subscription_delivers_in_order_with_its_ids() {
        let Parts { bus, metrics, sources } = parts();
        let (out, mut delivered) = mpsc::channel(16);
        let (reply, mut failures) = failed(7);
        let subscription = sources.subscribe(BUS_SOURCE, "news", 7, out, Backlog::new(1 << 20), reply);
        let_run().await;

        assert_eq!(
            bus.publish("news", Opcode::Text, "first".into()),
            1,
            "the flow is subscribed"
        );
        assert_eq!(bus.publish("news", Opcode::Binary, "second".into()), 1);
        assert_eq!(bus.publish("sports", Opcode::Text, "elsewhere".into()), 0);
        for (id, opcode, payload) in [("1", Opcode::Text, "first"), ("2", Opcode::Binary, "second")] {
            let message = within(delivered.recv()).await.unwrap();
            assert_eq!(message.sub, Some(7));
            assert_eq!(&*message.source, "bus");
            assert_eq!(message.id, id, "the id is the position in the topic");
            assert_eq!(message.opcode, opcode);
            assert_eq!(message.payload, Bytes::from(payload));
            assert!(message.attrs.is_empty());
        }
        let_run().await;
        assert!(matches!(delivered.try_recv(), Err(TryRecvError::Empty)));

        subscription.settle(Settle::Ack("1".into()));
        subscription.settle(Settle::Nack("2".into()));
        let_run().await;
        let counted = metrics.source(BUS_SOURCE);
        assert_eq!(
            (counted.delivered.get(), counted.acked.get(), counted.nacked.get()),
            (2, 1, 1)
        );

        // Dropping the subscription ends the flow: it lets go of `out` and of the failure hook,
        // without a failure.
        let dropped = Instant::now();
        drop(subscription);
        assert!(within(delivered.recv()).await.is_none());
        assert!(within(failures.recv()).await.is_none());
        assert_eq!(dropped.elapsed(), Duration::ZERO, "at once, not stopped after GRACE");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_the_flow_wait_and_loses_nothing() {
        let Parts { bus, metrics, sources } = parts();
        let (out, mut delivered) = mpsc::channel(1);
        let (reply, _failures) = failed(1);
        let _subscription = sources.subscribe(BUS_SOURCE, "t", 1, out, Backlog::new(1 << 20), reply);
        let_run().await;

        const SENT: usize = 100;
        for i in 0..SENT {
            assert_eq!(bus.publish("t", Opcode::Text, Bytes::from(i.to_string())), 1);
        }
        let_run().await;
        assert_eq!(delivered.len(), 1, "the queue is full");
        assert_eq!(metrics.source(BUS_SOURCE).delivered.get(), 1, "the rest wait");

        for i in 0..SENT {
            let message = within(delivered.recv()).await.unwrap();
            assert_eq!(message.id, (i + 1).to_string());
            assert_eq!(message.payload, Bytes::from(i.to_string()));
        }
        let_run().await;
        assert!(matches!(delivered.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(metrics.source(BUS_SOURCE).delivered.get(), SENT as u64);
        assert_eq!(metrics.bus_dropped("t").get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bus_flow_ends_when_the_connection_is_gone() {
        let Parts { bus, sources, .. } = parts();
        let (out, delivered) = mpsc::channel(1);
        let (reply, mut failures) = failed(1);
        let _subscription = sources.subscribe(BUS_SOURCE, "t", 1, out, Backlog::new(1 << 20), reply);
        let_run().await;
        drop(delivered);
        assert_eq!(bus.publish("t", Opcode::Text, "x".into()), 1);
        assert!(within(failures.recv()).await.is_none(), "ended, without a failure");
        let_run().await;
        assert_eq!(bus.publish("t", Opcode::Text, "y".into()), 0, "and unsubscribed");
    }

    async fn failure_of(source: &str, spec: &str) -> SinkResult {
        let Parts { sources, .. } = parts();
        let (out, mut delivered) = mpsc::channel(1);
        let (reply, mut failures) = failed(42);
        let _subscription = sources.subscribe(source, spec, 42, out, Backlog::new(1 << 20), reply);
        let failure = within(failures.recv()).await.expect("a failure");
        assert!(within(failures.recv()).await.is_none(), "only one");
        assert!(within(delivered.recv()).await.is_none(), "nothing delivered");
        failure
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_source_fails_the_subscription() {
        let failure = failure_of("nope", "x").await;
        assert_eq!((failure.ticket, failure.filter), (42, 3));
        assert_eq!(failure.context, Bytes::from_static(b"sub-context"));
        assert_eq!(
            failure.outcome,
            Err(DeliveryError::Failed("no source named \"nope\"".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bus_subscription_needs_a_topic() {
        let failure = failure_of(BUS_SOURCE, "").await;
        assert_eq!(failure.ticket, 42);
        assert_eq!(
            failure.outcome,
            Err(DeliveryError::Failed("a bus subscription needs a topic name".into()))
        );
    }

    /// What a probe flow went through.
    #[derive(Debug)]
    enum Event {
        Started {
            spec: String,
            sub: u64,
            source: String,
        },
        Settled(String),
        /// The flow ended or was stopped (dropped), at this time.
        Ended(Instant),
    }

    /// Sends `Ended` when the flow's future goes, however it goes.
    struct OnEnd(mpsc::UnboundedSender<Event>);

    impl Drop for OnEnd {
        fn drop(&mut self) {
            let _ = self.0.send(Event::Ended(Instant::now()));
        }
    }

    /// A source whose flows report what they do; `stubborn` ones never look at their verdicts.
    struct Probe {
        events: mpsc::UnboundedSender<Event>,
        stubborn: bool,
    }

    impl SourceConnector for Probe {
        fn subscribe(self: Arc<Self>, spec: String, feed: Feed, mut verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
            Box::pin(async move {
                let _end = OnEnd(self.events.clone());
                let started = Event::Started {
                    spec,
                    sub: feed.sub,
                    source: feed.source.to_string(),
                };
                let _ = self.events.send(started);
                if self.stubborn {
                    std::future::pending::<()>().await;
                }
                while let Some(verdict) = verdicts.recv().await {
                    feed.settled(&verdict);
                    let _ = self.events.send(Event::Settled(format!("{verdict:?}")));
                }
                Ok(())
            })
        }
    }

    /// Sources with a probe configured as `probe`, and what its flows report.
    fn with_probe(stubborn: bool) -> (Parts, mpsc::UnboundedReceiver<Event>) {
        let parts = parts();
        let config = Config::parse("[sources.probe]\ntype = \"kafka\"\n", "test.toml").unwrap();
        let (events, reported) = mpsc::unbounded_channel();
        let mut catalog = Catalog::default();
        let probe: Arc<dyn SourceConnector> = Arc::new(Probe { events, stubborn });
        catalog.sources.insert("probe".into(), SourceKind::Subscribed(probe));
        parts.sources.apply(&config, &catalog);
        (parts, reported)
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_subscription_settles_what_is_queued_and_ends_the_flow() {
        let (Parts { metrics, sources, .. }, mut events) = with_probe(false);
        assert_eq!(&*sources.names(), ["bus".to_string(), "probe".to_string()]);
        let (out, _delivered) = mpsc::channel(1);
        let (reply, mut failures) = failed(9);
        let subscription = sources.subscribe("probe", "{\"topic\": \"t\"}", 9, out, Backlog::new(1 << 20), reply);
        match within(events.recv()).await.unwrap() {
            Event::Started { spec, sub, source } => {
                assert_eq!(
                    (spec.as_str(), sub, source.as_str()),
                    ("{\"topic\": \"t\"}", 9, "probe")
                );
            }
            other => panic!("{other:?}"),
        }
        let_run().await;
        assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)), "running");

        subscription.settle(Settle::Ack("a".into()));
        subscription.settle(Settle::Nack("b".into()));
        let dropped = Instant::now();
        drop(subscription);
        let mut settled = Vec::new();
        loop {
            match within(events.recv()).await.expect("the flow reports its end") {
                Event::Settled(verdict) => settled.push(verdict),
                Event::Ended(at) => {
                    assert_eq!(at, dropped, "at once, not stopped after GRACE");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(settled, ["Ack(\"a\")", "Nack(\"b\")"], "the last verdicts count");
        assert!(within(failures.recv()).await.is_none(), "ended without a failure");
        let counted = metrics.source("probe");
        assert_eq!((counted.acked.get(), counted.nacked.get()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flow_that_does_not_let_go_is_stopped_after_the_grace_period() {
        let (Parts { sources, .. }, mut events) = with_probe(true);
        let (out, _delivered) = mpsc::channel(1);
        let (reply, mut failures) = failed(9);
        let subscription = sources.subscribe("probe", "t", 9, out, Backlog::new(1 << 20), reply);
        assert!(matches!(within(events.recv()).await, Some(Event::Started { .. })));

        // A live subscription is never stopped, however long it runs.
        tokio::time::sleep(GRACE * 10).await;
        assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)), "still running");

        let dropped = Instant::now();
        drop(subscription);
        let Some(Event::Ended(ended)) = within(events.recv()).await else {
            panic!("stopped");
        };
        assert_eq!(ended - dropped, GRACE);
        assert!(within(failures.recv()).await.is_none(), "being stopped is no failure");
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_stops_a_cancelled_flow_at_the_end_of_grace_not_before() {
        let (events, mut reported) = mpsc::unbounded_channel();
        let flow: Flow = Box::pin(async move {
            let _end = OnEnd(events);
            std::future::pending::<Result<(), String>>().await
        });
        let (reply, mut failures) = failed(1);
        let stop = CancellationToken::new();
        spawn(flow, reply, stop.clone());
        let_run().await;
        stop.cancel();
        let_run().await;
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        let_run().await;
        assert!(matches!(reported.try_recv(), Err(TryRecvError::Empty)), "stopped early");
        tokio::time::advance(Duration::from_millis(1)).await;
        let_run().await;
        assert!(matches!(reported.try_recv(), Ok(Event::Ended(_))));
        assert!(within(failures.recv()).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_reports_why_a_flow_ended() {
        let (reply, mut failures) = failed(5);
        spawn(
            Box::pin(async { Err("broker said no".to_string()) }),
            reply,
            CancellationToken::new(),
        );
        let failure = within(failures.recv()).await.unwrap();
        assert_eq!(failure.ticket, 5);
        assert_eq!(failure.outcome, Err(DeliveryError::Failed("broker said no".into())));
        assert!(within(failures.recv()).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn feed_delivers_until_the_connection_is_gone() {
        let metrics = Metrics::default();
        let (out, mut delivered) = mpsc::channel(4);
        let feed = Feed {
            sub: 3,
            source: "probe".into(),
            out,
            backlog: Backlog::new(1 << 20),
            health: Arc::new(Health::default()).part("sources.probe".into(), &metrics),
            metrics: metrics.source("probe"),
        };
        let attrs = vec![("key".to_string(), Bytes::from("k"))];
        assert!(
            feed.deliver("m1".into(), Opcode::Binary, "p".into(), attrs.clone())
                .await
        );
        let message = delivered.recv().await.unwrap();
        assert_eq!(
            (message.sub, &*message.source, message.id.as_str()),
            (Some(3), "probe", "m1")
        );
        assert_eq!((message.opcode, message.payload.as_ref()), (Opcode::Binary, &b"p"[..]));
        assert_eq!(message.attrs, attrs);
        drop(delivered);
        assert!(!feed.deliver("m2".into(), Opcode::Text, "q".into(), Vec::new()).await);
        assert_eq!(metrics.source("probe").delivered.get(), 1, "only what was handed over");
    }

    #[test]
    fn sources_apply_keeps_unchanged_sources() {
        let Parts { sources, .. } = parts();
        let text = "[sources.k]\ntype = \"kafka\"\n[sources.w]\ntype = \"ws\"\nurl = \"ws://127.0.0.1:1/\"\n";
        let config = Config::parse(text, "test.toml").unwrap();
        let catalog = Catalog::parse(&config).unwrap();
        sources.apply(&config, &catalog);
        assert_eq!(
            &*sources.names(),
            ["bus".to_string(), "k".to_string()],
            "a ws source feeds routes"
        );
        let before = sources.configured.load().get("k").cloned().unwrap();
        sources.apply(&config, &catalog);
        assert!(Arc::ptr_eq(&before, &sources.configured.load()["k"]));
        let changed = Config::parse(
            &text.replace("kafka\"", "kafka\"\nbrokers = \"other:9092\""),
            "test.toml",
        );
        let changed = changed.unwrap();
        sources.apply(&changed, &Catalog::parse(&changed).unwrap());
        assert!(!Arc::ptr_eq(&before, &sources.configured.load()["k"]));
        sources.apply(&Config::parse("", "test.toml").unwrap(), &Catalog::default());
        assert_eq!(&*sources.names(), ["bus".to_string()]);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        topic: String,
        #[serde(default)]
        group: Option<String>,
    }

    #[test]
    fn specs_are_a_bare_name_or_a_json_object() {
        let bare: Spec = parse_spec("  orders \n", "topic").unwrap();
        assert_eq!(
            bare,
            Spec {
                topic: "orders".into(),
                group: None
            }
        );
        let object: Spec = parse_spec(r#" {"topic": "orders", "group": "g1"} "#, "topic").unwrap();
        assert_eq!(
            object,
            Spec {
                topic: "orders".into(),
                group: Some("g1".into())
            }
        );
        let bad = parse_spec::<Spec>(r#"{"topic": "#, "topic").unwrap_err();
        assert!(bad.starts_with("bad subscription spec: EOF while parsing"), "{bad}");
        let missing = parse_spec::<Spec>(r#"{"group": "g"}"#, "topic").unwrap_err();
        assert_eq!(missing, "bad subscription spec: missing field `topic`");
        let unknown = parse_spec::<Spec>(r#"{"topic": "t", "partition": 1}"#, "topic").unwrap_err();
        assert!(unknown.contains("unknown field `partition`"), "{unknown}");
        let wrong_field = parse_spec::<Spec>("orders", "subject").unwrap_err();
        assert!(wrong_field.contains("unknown field `subject`"), "{wrong_field}");
    }
}
