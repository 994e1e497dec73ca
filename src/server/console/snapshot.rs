//! The console's snapshot: what is running and how it does, gathered as JSON from where each
//! part already keeps it: the router (routes, chains, sinks, taps), the filter host (versions,
//! reloads), health (what is down and why) and the metrics registry (counts). Rates are left to
//! the page, from two snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::samples::Samples;
use crate::config::Relay;
use crate::connectors::sinks::RouteSink;
use crate::filter::ModuleStatus;
use crate::server::Edge;

#[derive(Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    /// What /readyz would answer.
    pub ready: bool,
    pub shutting_down: bool,
    pub routes: Vec<RouteView>,
    pub sinks: Vec<PeerView>,
    pub sources: Vec<PeerView>,
    pub filters: Vec<FilterView>,
    pub tap: bool,
}

#[derive(Serialize)]
pub struct RouteView {
    pub name: String,
    pub path: Option<String>,
    /// The `ws` source feeding the route, for a fed one.
    pub feed: Option<String>,
    pub filters: Vec<ChainLink>,
    pub sinks: Vec<String>,
    pub emit_sinks: Vec<String>,
    /// `frames` or `bytes` for a pass-through route (no filters, one ws sink); none otherwise.
    pub relay: Option<Relay>,
    pub connections: i64,
    pub opened: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections ended, by close code.
    pub closes: BTreeMap<String, f64>,
    /// Upgrades refused, by HTTP status.
    pub refused: BTreeMap<String, f64>,
    pub tap_watchers: usize,
}

/// One filter of a route's chain, with the module version it runs.
#[derive(Serialize)]
pub struct ChainLink {
    pub module: String,
    pub version_hash: Option<String>,
    pub loaded_at_ms: Option<u64>,
}

/// A sink or a source: its health and its counts (by outcome for a sink, by event for a
/// source), with the queue of a sink and the connection of a `ws` source.
#[derive(Serialize)]
pub struct PeerView {
    pub name: String,
    pub kind: Option<String>,
    pub up: bool,
    /// Why it is down (the /readyz line).
    pub reason: Option<String>,
    pub warning: Option<String>,
    pub counts: BTreeMap<String, f64>,
    pub queued: Option<usize>,
    pub queue_size: Option<usize>,
    /// A `ws` source: whether it is connected, its reconnects, messages, drops.
    pub feed: Option<FeedView>,
}

#[derive(Serialize)]
pub struct FeedView {
    pub connected: bool,
    pub events: BTreeMap<String, f64>,
    pub paused_seconds: f64,
}

#[derive(Serialize)]
pub struct FilterView {
    #[serde(flatten)]
    pub status: ModuleStatus,
    pub reload_failures: f64,
    /// Calls cut off, by kind (trap, timeout, memory, init).
    pub failures: BTreeMap<String, f64>,
    pub calls: f64,
    pub call_seconds: f64,
    pub meta_refused: f64,
}

pub fn take(edge: &Edge) -> Snapshot {
    let samples = Samples::parse(&edge.metrics.render());
    let router = edge.router.load();
    let modules: BTreeMap<String, ModuleStatus> = edge
        .host
        .status()
        .into_iter()
        .map(|status| (status.name.clone(), status))
        .collect();
    let (down, warnings) = (edge.health.down(), edge.health.warnings());

    let routes: Vec<RouteView> = router
        .all()
        .map(|route| {
            let settings = &route.settings;
            let name = &*route.name;
            RouteView {
                name: name.to_string(),
                path: settings.path.clone(),
                feed: settings.feed.clone(),
                filters: settings
                    .filters
                    .iter()
                    .map(|filter| {
                        let status = modules.get(&filter.module);
                        ChainLink {
                            module: filter.module.clone(),
                            version_hash: status.and_then(|s| s.version_hash.clone()),
                            loaded_at_ms: status.and_then(|s| s.loaded_at_ms),
                        }
                    })
                    .collect(),
                sinks: settings.sinks.clone(),
                emit_sinks: settings.emit_sinks.clone(),
                relay: route.passes_through.then_some(settings.relay),
                connections: route.metrics.active.get(),
                opened: route.metrics.opened.get(),
                messages_in: route.metrics.messages_in.get(),
                messages_out: route.metrics.messages_out.get(),
                bytes_in: route.metrics.bytes_in.get(),
                bytes_out: route.metrics.bytes_out.get(),
                closes: samples.by("framegate_connections_closed_total", &[("route", name)], "code"),
                refused: samples.by("framegate_upgrades_refused_total", &[("route", name)], "status"),
                tap_watchers: route.tap.watchers(),
            }
        })
        .collect();

    // Sinks: those of the routes, and any the registry or health knows (an unused one).
    let mut handles: BTreeMap<String, RouteSink> = BTreeMap::new();
    for route in router.all() {
        for name in route.sink_names.iter() {
            if let Some(sink) = route.sink(name) {
                handles.insert(name.clone(), sink);
            }
        }
    }
    let part_names = |prefix: &str| -> BTreeSet<String> {
        down.keys()
            .chain(warnings.keys())
            .chain(&samples.label_values("framegate_peer_up", "part"))
            .filter_map(|part| part.strip_prefix(prefix))
            .map(String::from)
            .collect()
    };
    let mut sink_names = part_names("sinks.");
    sink_names.extend(handles.keys().cloned());
    sink_names.extend(samples.label_values("framegate_sink_records_total", "sink"));
    let peer = |part: String, name: String, counts: BTreeMap<String, f64>| PeerView {
        up: !down.contains_key(&part),
        reason: down.get(&part).cloned(),
        warning: warnings.get(&part).cloned(),
        name,
        kind: None,
        counts,
        queued: None,
        queue_size: None,
        feed: None,
    };
    let sinks = sink_names
        .into_iter()
        .map(|name| {
            let counts = samples.by("framegate_sink_records_total", &[("sink", &name)], "outcome");
            let mut view = peer(format!("sinks.{name}"), name.clone(), counts);
            match handles.get(&name) {
                Some(RouteSink::Queued(handle)) => {
                    let (queued, size) = handle.queued();
                    view.kind = Some(handle.kind().to_string());
                    (view.queued, view.queue_size) = (Some(queued), Some(size));
                }
                Some(RouteSink::Upstream(..)) => view.kind = Some("ws".into()),
                None => {}
            }
            view
        })
        .collect();

    let feeds = samples.label_values("framegate_feed_connected", "source");
    let mut source_names = part_names("sources.");
    source_names.extend(edge.sources.names().iter().cloned());
    source_names.extend(feeds.iter().cloned());
    let sources = source_names
        .into_iter()
        .map(|name| {
            let counts = samples.by("framegate_source_messages_total", &[("source", &name)], "event");
            let mut view = peer(format!("sources.{name}"), name.clone(), counts);
            if feeds.contains(&name) {
                let source = [("source", name.as_str())];
                view.kind = Some("ws".into());
                view.feed = Some(FeedView {
                    connected: samples.value("framegate_feed_connected", &source) == 1.0,
                    events: samples.by("framegate_feed_total", &source, "event"),
                    paused_seconds: samples.value("framegate_feed_paused_seconds_total", &source),
                });
            }
            view
        })
        .collect();

    let filters = modules
        .into_values()
        .map(|status| {
            let filter = [("filter", status.name.as_str())];
            FilterView {
                reload_failures: samples.value("framegate_filter_reload_failures_total", &filter),
                failures: samples.by("framegate_filter_failures_total", &filter, "kind"),
                calls: samples.value("framegate_filter_call_seconds_count", &filter),
                call_seconds: samples.value("framegate_filter_call_seconds_sum", &filter),
                meta_refused: samples.value("framegate_filter_meta_refused_total", &filter),
                status,
            }
        })
        .collect();

    Snapshot {
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ready: down.is_empty() && !edge.shutdown.is_cancelled(),
        shutting_down: edge.shutdown.is_cancelled(),
        routes,
        sinks,
        sources,
        filters,
        tap: edge.console.tap,
    }
}
