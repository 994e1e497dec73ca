//! Prometheus metrics: the families, registered once, and per-route, per-filter and per-sink
//! handles resolved once so that the hot path never looks a label up.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod striped;
pub use striped::CallHistogram;

/// The metric of one label set. `get_or_create` hands out a read guard: taking a second one
/// while the first lives (as in one struct literal) deadlocks, so every lookup goes through here.
fn owned<S, M, C>(family: &Family<S, M, C>, labels: &S) -> M
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    family.get_or_create(labels).clone()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabel {
    route: String,
    dir: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeflateLabel {
    part: String,
    dir: &'static str,
    form: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLabel {
    route: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabel {
    route: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabel {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabel {
    filter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    filter: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CustomLabel {
    filter: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabel {
    part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    connections_active: Family<RouteLabel, Gauge>,
    connections: Family<RouteLabel, Counter>,
    refused: Family<RefusedLabel, Counter>,
    auth_refused: Family<AuthLabel, Counter>,
    messages: Family<FlowLabel, Counter>,
    bytes: Family<FlowLabel, Counter>,
    filter_calls: Family<FilterLabel, CallHistogram>,
    filter_failures: Family<FailureLabel, Counter>,
    filter_reloads: Family<FilterLabel, Counter>,
    filter_reload_failures: Family<FilterLabel, Counter>,
    filter_meta_refused: Family<FilterLabel, Counter>,
    filter_breaker_open: Family<FilterLabel, Gauge>,
    filter_breaker_trips: Family<FilterLabel, Counter>,
    custom_counters: Family<CustomLabel, Counter<f64, AtomicU64>>,
    custom_gauges: Family<CustomLabel, Gauge<f64, AtomicU64>>,
    sink_records: Family<SinkLabel, Counter>,
    bus_dropped: Family<TopicLabel, Counter>,
    peer_up: Family<PartLabel, Gauge>,
    source_messages: Family<SourceLabel, Counter>,
    feed_connected: Family<FeedLabel, Gauge>,
    feed_events: Family<SourceLabel, Counter>,
    feed_paused: Family<FeedLabel, Counter<f64, AtomicU64>>,
    filters: Mutex<HashMap<String, Arc<FilterMetrics>>>,
    edge: EdgeMetrics,
    /// Config file changes not applied: invalid, empty, or a part that could not be built.
    pub config_reloads_refused: Counter,
    /// Where a graceful shutdown stands (server::drain::Phase): 0 serving, 1 draining, 2 listener
    /// closed, 3 closing connections, 4 flushing sinks.
    pub shutdown_phase: Gauge,
    /// Tasks alive in the proxy's runtime, read at each scrape: a task that never ends shows here.
    runtime_tasks: Gauge,
    rate_limited: Family<RateLabel, Counter>,
    closed: Family<CloseLabel, Counter>,
    deflate_bytes: Family<DeflateLabel, Counter>,
    upstream_bytes: Family<DeflateLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("framegate");
        let connections_active = Family::default();
        let connections = Family::default();
        let refused = Family::default();
        let auth_refused = Family::default();
        let messages = Family::default();
        let bytes = Family::default();
        let filter_calls = Family::default();
        let filter_failures = Family::default();
        let filter_reloads = Family::default();
        let filter_reload_failures = Family::default();
        let filter_meta_refused = Family::default();
        let filter_breaker_open = Family::default();
        let filter_breaker_trips = Family::default();
        let custom_counters = Family::default();
        let custom_gauges = Family::default();
        let sink_records = Family::default();
        let bus_dropped = Family::default();
        let peer_up = Family::default();
        let source_messages = Family::default();
        let feed_connected = Family::default();
        let feed_events = Family::default();
        let feed_paused = Family::default();
        registry.register(
            "connections_active",
            "Open client connections",
            connections_active.clone(),
        );
        registry.register("connections", "Client connections accepted", connections.clone());
        registry.register("upgrades_refused", "Upgrades refused, by HTTP status", refused.clone());
        registry.register(
            "auth_refused",
            "Connections refused or closed by authentication, by reason",
            auth_refused.clone(),
        );
        registry.register("messages", "Messages, by route and direction", messages.clone());
        registry.register("bytes", "Payload bytes, by route and direction", bytes.clone());
        registry.register(
            "filter_call_seconds",
            "Time of one filter hook call",
            filter_calls.clone(),
        );
        registry.register(
            "filter_failures",
            "Filter calls cut off: trap, timeout, memory, init",
            filter_failures.clone(),
        );
        registry.register("filter_reloads", "Filter versions swapped in", filter_reloads.clone());
        registry.register(
            "filter_reload_failures",
            "Filter files refused on reload",
            filter_reload_failures.clone(),
        );
        registry.register(
            "filter_meta_refused",
            "Metadata a filter set past its route's max_meta_keys or max_meta_bytes, refused",
            filter_meta_refused.clone(),
        );
        registry.register(
            "filter_breaker_open",
            "1 from when a filter's circuit breaker opens until a call succeeds again",
            filter_breaker_open.clone(),
        );
        registry.register(
            "filter_breaker_trips",
            "Times a filter's circuit breaker opened",
            filter_breaker_trips.clone(),
        );
        registry.register(
            "filter_custom",
            "Counters filters keep with `metric`",
            custom_counters.clone(),
        );
        registry.register(
            "filter_custom_gauge",
            "Gauges filters set with `metric`",
            custom_gauges.clone(),
        );
        registry.register("sink_records", "Records by sink and outcome", sink_records.clone());
        registry.register(
            "bus_dropped",
            "Bus subscribers dropped, their connections closed (1008 too slow): a backlog past max_backlog_bytes",
            bus_dropped.clone(),
        );
        registry.register(
            "peer_up",
            "1 while a sink's or source's broker is reachable",
            peer_up.clone(),
        );
        registry.register(
            "source_messages",
            "Source messages delivered to connections, acked and nacked",
            source_messages.clone(),
        );
        registry.register(
            "feed_connected",
            "1 while a ws source is connected to its server",
            feed_connected.clone(),
        );
        registry.register(
            "feed",
            "A ws source's reconnects, messages, bytes, and messages dropped for a full queue",
            feed_events.clone(),
        );
        registry.register(
            "feed_paused_seconds",
            "Time a ws source stopped reading because a fed route's queue was full",
            feed_paused.clone(),
        );
        let edge = EdgeMetrics {
            refused: Family::default(),
            handshaking: Gauge::default(),
            accept_errors: Counter::default(),
        };
        registry.register(
            "edge_refused",
            "Connections and upgrades the edge guards refused, by reason",
            edge.refused.clone(),
        );
        registry.register(
            "connections_handshaking",
            "Connections accepted and not yet upgraded",
            edge.handshaking.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (out of file descriptors or buffers), each followed by a pause",
            edge.accept_errors.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Client messages past a route's rate_limit: connections paused (slow) or closed (close)",
            rate_limited.clone(),
        );
        let config_reloads_refused = Counter::default();
        registry.register(
            "config_reloads_refused",
            "Config file changes not applied: invalid, empty, or a part that could not be built",
            config_reloads_refused.clone(),
        );
        let closed = Family::default();
        registry.register(
            "connections_closed",
            "Client connections ended, by route and close code (1006: broken without one)",
            closed.clone(),
        );
        let shutdown_phase = Gauge::default();
        registry.register(
            "shutdown_phase",
            "Graceful shutdown: 0 serving, 1 draining (readyz 503, still accepting), 2 listener closed, 3 closing connections (1001), 4 flushing sinks",
            shutdown_phase.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive in the proxy's async runtime (sessions, sinks, sources, timers), at the scrape",
            runtime_tasks.clone(),
        );
        let deflate_bytes = Family::default();
        registry.register(
            "deflate_bytes",
            "Payload bytes of compressed messages (permessage-deflate), plain and as sent, by route or source and direction",
            deflate_bytes.clone(),
        );
        let upstream_bytes = Family::default();
        registry.register(
            "upstream_bytes",
            "Payload bytes of every message to and from the servers of ws sinks and sources, on the wire and plain (inflated), by sink or source and direction",
            upstream_bytes.clone(),
        );
        Metrics {
            registry,
            connections_active,
            connections,
            refused,
            auth_refused,
            messages,
            bytes,
            filter_calls,
            filter_failures,
            filter_reloads,
            filter_reload_failures,
            filter_meta_refused,
            filter_breaker_open,
            filter_breaker_trips,
            custom_counters,
            custom_gauges,
            sink_records,
            bus_dropped,
            peer_up,
            source_messages,
            feed_connected,
            feed_events,
            feed_paused,
            filters: Mutex::default(),
            edge,
            config_reloads_refused,
            shutdown_phase,
            runtime_tasks,
            rate_limited,
            closed,
            deflate_bytes,
            upstream_bytes,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let tasks = tokio::runtime::Handle::try_current().map_or(0, |runtime| runtime.metrics().num_alive_tasks());
        self.runtime_tasks.set(tasks as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    pub fn route(&self, route: &str) -> RouteMetrics {
        let label = RouteLabel { route: route.into() };
        let flow = |dir| FlowLabel {
            route: route.into(),
            dir,
        };
        let rate = |action| RateLabel {
            route: route.into(),
            action,
        };
        RouteMetrics {
            route: route.into(),
            active: owned(&self.connections_active, &label),
            opened: owned(&self.connections, &label),
            refused: self.refused.clone(),
            messages_in: owned(&self.messages, &flow("in")),
            messages_out: owned(&self.messages, &flow("out")),
            bytes_in: owned(&self.bytes, &flow("in")),
            bytes_out: owned(&self.bytes, &flow("out")),
            rate_slowed: owned(&self.rate_limited, &rate("slow")),
            rate_closed: owned(&self.rate_limited, &rate("close")),
            closed: self.closed.clone(),
            deflate: self.deflate(route),
        }
    }

    /// The compression counts of a route's clients or a `ws` sink's or source's upstream (`part`).
    pub fn deflate(&self, part: &str) -> DeflateCounters {
        two_forms(&self.deflate_bytes, part, "compressed")
    }

    /// The counts of a `ws` sink's or source's upstream connections (`part`: `sinks.NAME`,
    /// `sources.NAME`).
    pub fn upstream(&self, part: &str) -> UpstreamCounters {
        UpstreamCounters {
            compressed: self.deflate(part),
            traffic: two_forms(&self.upstream_bytes, part, "wire"),
        }
    }

    pub fn auth(&self, route: &str) -> AuthMetrics {
        AuthMetrics {
            route: route.into(),
            refused: self.auth_refused.clone(),
        }
    }

    pub fn filter(&self, filter: &str) -> Arc<FilterMetrics> {
        let mut filters = self.filters.lock().unwrap();
        filters
            .entry(filter.to_string())
            .or_insert_with(|| {
                let label = FilterLabel { filter: filter.into() };
                Arc::new(FilterMetrics {
                    filter: filter.into(),
                    call_seconds: owned(&self.filter_calls, &label),
                    reloads: owned(&self.filter_reloads, &label),
                    reload_failures: owned(&self.filter_reload_failures, &label),
                    meta_refused: owned(&self.filter_meta_refused, &label),
                    breaker_open: owned(&self.filter_breaker_open, &label),
                    breaker_trips: owned(&self.filter_breaker_trips, &label),
                    failures: self.filter_failures.clone(),
                    custom_counters: self.custom_counters.clone(),
                    custom_gauges: self.custom_gauges.clone(),
                    custom_names: Mutex::default(),
                })
            })
            .clone()
    }

    pub fn sink(&self, sink: &str) -> SinkMetrics {
        let outcome = |outcome| {
            owned(
                &self.sink_records,
                &SinkLabel {
                    sink: sink.into(),
                    outcome,
                },
            )
        };
        SinkMetrics {
            delivered: outcome("delivered"),
            failed: outcome("failed"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
        }
    }

    pub fn peer_up(&self, part: &str) -> Gauge {
        owned(&self.peer_up, &PartLabel { part: part.into() })
    }

    pub fn source(&self, source: &str) -> SourceMetrics {
        let event = |event| {
            owned(
                &self.source_messages,
                &SourceLabel {
                    source: source.into(),
                    event,
                },
            )
        };
        SourceMetrics {
            delivered: event("delivered"),
            acked: event("acked"),
            nacked: event("nacked"),
        }
    }

    pub fn feed(&self, source: &str) -> FeedMetrics {
        let event = |event| {
            owned(
                &self.feed_events,
                &SourceLabel {
                    source: source.into(),
                    event,
                },
            )
        };
        let label = FeedLabel { source: source.into() };
        FeedMetrics {
            connected: owned(&self.feed_connected, &label),
            reconnects: event("reconnects"),
            messages: event("messages"),
            bytes: event("bytes"),
            dropped: event("dropped"),
            paused_seconds: owned(&self.feed_paused, &label),
            upstream: self.upstream(&format!("sources.{source}")),
        }
    }

    pub fn edge(&self) -> EdgeMetrics {
        self.edge.clone()
    }

    pub fn bus_dropped(&self, topic: &str) -> Counter {
        owned(&self.bus_dropped, &TopicLabel { topic: topic.into() })
    }
}

/// One route's handles.
#[derive(Clone)]
pub struct RouteMetrics {
    route: String,
    pub active: Gauge,
    pub opened: Counter,
    refused: Family<RefusedLabel, Counter>,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    /// Messages after which a connection stopped being read, to keep its rate limit.
    pub rate_slowed: Counter,
    /// Connections closed for passing their rate limit.
    pub rate_closed: Counter,
    closed: Family<CloseLabel, Counter>,
    /// Compressed messages of the route's clients (permessage-deflate).
    pub deflate: DeflateCounters,
}

impl RouteMetrics {
    /// A connection ended with `code` (the client's close, or the one framegate sent).
    pub fn closed(&self, code: u16) {
        self.closed
            .get_or_create(&CloseLabel {
                route: self.route.clone(),
                code,
            })
            .inc();
    }

    pub fn refused(&self, status: u16) {
        self.refused
            .get_or_create(&RefusedLabel {
                route: self.route.clone(),
                status,
            })
            .inc();
    }
}

/// The counters of `part` in a family of bytes in two forms, plain and `other` (as sent).
fn two_forms(family: &Family<DeflateLabel, Counter>, part: &str, other: &'static str) -> DeflateCounters {
    let counter = |dir, form| {
        owned(
            family,
            &DeflateLabel {
                part: part.into(),
                dir,
                form,
            },
        )
    };
    DeflateCounters {
        plain_in: counter("in", "plain"),
        compressed_in: counter("in", other),
        plain_out: counter("out", "plain"),
        compressed_out: counter("out", other),
    }
}

/// An upstream connection's counts (a `ws` sink's or source's).
#[derive(Clone, Default)]
pub struct UpstreamCounters {
    /// Compressed messages, as a route counts its clients'.
    pub compressed: DeflateCounters,
    /// Every data message, compressed or not: bytes on the wire and plain.
    pub traffic: DeflateCounters,
}

/// Bytes of messages in two forms, plain and as sent (compressed): what was saved is plain
/// minus compressed.
#[derive(Clone, Default)]
pub struct DeflateCounters {
    plain_in: Counter,
    compressed_in: Counter,
    plain_out: Counter,
    compressed_out: Counter,
}

impl DeflateCounters {
    pub fn read(&self, compressed: usize, plain: usize) {
        self.compressed_in.inc_by(compressed as u64);
        self.plain_in.inc_by(plain as u64);
    }

    pub fn written(&self, plain: usize, compressed: usize) {
        self.plain_out.inc_by(plain as u64);
        self.compressed_out.inc_by(compressed as u64);
    }
}

/// One route's authentication refusals.
#[derive(Clone)]
pub struct AuthMetrics {
    route: String,
    refused: Family<AuthLabel, Counter>,
}

impl AuthMetrics {
    pub fn refused(&self, reason: &'static str) {
        self.refused
            .get_or_create(&AuthLabel {
                route: self.route.clone(),
                reason,
            })
            .inc();
    }
}

/// One filter module's handles.
pub struct FilterMetrics {
    filter: String,
    pub call_seconds: CallHistogram,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub meta_refused: Counter,
    pub breaker_open: Gauge,
    pub breaker_trips: Counter,
    failures: Family<FailureLabel, Counter>,
    custom_counters: Family<CustomLabel, Counter<f64, AtomicU64>>,
    custom_gauges: Family<CustomLabel, Gauge<f64, AtomicU64>>,
    /// The names the module's custom metrics took so far (at most `MAX_CUSTOM_NAMES`).
    custom_names: Mutex<std::collections::HashSet<String>>,
}

/// Names one filter module's custom counters and gauges may take: a filter that names them
/// after what clients send cannot grow the registry (and every scrape) without end.
pub const MAX_CUSTOM_NAMES: usize = 1000;

impl FilterMetrics {
    pub fn failure(&self, kind: &'static str) {
        self.failures
            .get_or_create(&FailureLabel {
                filter: self.filter.clone(),
                kind,
            })
            .inc();
    }

    fn custom(&self, name: &str) -> CustomLabel {
        CustomLabel {
            filter: self.filter.clone(),
            name: name.into(),
        }
    }

    /// Whether `name` is one of the module's custom names, or may become one.
    fn admits(&self, name: &str) -> bool {
        let mut names = self.custom_names.lock().expect("never poisoned");
        names.contains(name) || (names.len() < MAX_CUSTOM_NAMES && names.insert(name.to_string()))
    }

    /// Adds to a custom counter; `false` (nothing counted) for a new name past `MAX_CUSTOM_NAMES`.
    pub fn custom_counter(&self, name: &str, value: f64) -> bool {
        let admitted = self.admits(name);
        if admitted {
            self.custom_counters.get_or_create(&self.custom(name)).inc_by(value);
        }
        admitted
    }

    /// Sets a custom gauge; `false` (nothing set) for a new name past `MAX_CUSTOM_NAMES`.
    pub fn custom_gauge(&self, name: &str, value: f64) -> bool {
        let admitted = self.admits(name);
        if admitted {
            self.custom_gauges.get_or_create(&self.custom(name)).set(value);
        }
        admitted
    }
}

/// One sink's handles.
#[derive(Clone)]
pub struct SinkMetrics {
    pub delivered: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
}

/// One source's handles.
#[derive(Clone)]
pub struct SourceMetrics {
    pub delivered: Counter,
    pub acked: Counter,
    pub nacked: Counter,
}

/// One `ws` source's handles.
#[derive(Clone)]
pub struct FeedMetrics {
    pub connected: Gauge,
    pub reconnects: Counter,
    pub messages: Counter,
    pub bytes: Counter,
    pub dropped: Counter,
    pub paused_seconds: Counter<f64, AtomicU64>,
    /// Its connection's bytes, compressed and on the wire.
    pub upstream: UpstreamCounters,
}

/// The listener's guards: what they refused, connections in their handshake, failed accepts.
#[derive(Clone)]
pub struct EdgeMetrics {
    refused: Family<ReasonLabel, Counter>,
    pub handshaking: Gauge,
    pub accept_errors: Counter,
}

impl EdgeMetrics {
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter naming its counters after what clients send (the schema filter did, by extra
    /// key and list index) stops at `MAX_CUSTOM_NAMES`; the names it has keep counting.
    #[test]
    fn a_module_has_at_most_max_custom_names() {
        let metrics = Metrics::default();
        let filter = metrics.filter("f");
        for i in 0..MAX_CUSTOM_NAMES {
            assert!(filter.custom_counter(&format!("n{i}"), 1.0));
        }
        assert!(!filter.custom_counter("one more", 1.0));
        assert!(!filter.custom_gauge("and a gauge", 1.0));
        assert!(filter.custom_counter("n0", 1.0));
        let text = metrics.render();
        assert!(
            text.contains(r#"framegate_filter_custom_total{filter="f",name="n0"} 2"#),
            "{text}"
        );
        assert!(!text.contains("one more"));
        // Another module has names of its own.
        assert!(metrics.filter("g").custom_counter("one more", 1.0));
    }
}
