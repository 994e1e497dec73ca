//! Routes as sessions and the server use them: path template, filter chain, sinks and
//! per-route settings, built from the config; a reload keeps every route whose config and sinks
//! did not change.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Auth;
use crate::config::{Config, RouteConfig, RoutePath};
use crate::connectors::Sinks;
use crate::connectors::sinks::RouteSink;
use crate::connectors::ws::Upstream;
use crate::filter::{Chain, FilterHost, InitWith};
use crate::metrics::{Metrics, RouteMetrics};
use crate::record::RouteRecorder;
use crate::tap::{RouteTap, Taps};

/// `{name}` captures of a matched path: (name, value).
pub type Captures = Vec<(String, String)>;

pub struct Route {
    pub name: Arc<str>,
    /// `None` for a route fed by a source.
    path: Option<RoutePath>,
    /// The route's config: its message limit, keepalive and idle settings.
    pub settings: RouteConfig,
    /// No filters and a single ws:// sink (`Config::passes_through`): relayed, not read.
    pub passes_through: bool,
    pub chain: Chain,
    /// Where a message goes after the chain, in config order.
    pub sinks: Vec<RouteSink>,
    /// Sinks only `emit` reaches (a dead-letter sink of a filter, say).
    emit_only: Vec<RouteSink>,
    sinks_by_name: HashMap<String, RouteSink>,
    /// The sinks filters may `emit` to: both kinds.
    pub sink_names: Arc<[String]>,
    pub metrics: RouteMetrics,
    /// Who may connect (src/auth/).
    pub auth: Auth,
    /// The console's live tap of this route's messages.
    pub tap: Arc<RouteTap>,
    /// Writes the route's sessions as replay files (`[routes.NAME.record]`).
    pub recorder: Option<Arc<RouteRecorder>>,
}

impl Route {
    pub fn sink(&self, name: &str) -> Option<RouteSink> {
        self.sinks_by_name.get(name).cloned()
    }

    /// The route's upstream `ws` sink, if it has one (at most one is used).
    pub fn upstream(&self) -> Option<(Arc<str>, Arc<Upstream>)> {
        self.sinks.iter().find_map(|s| match s {
            RouteSink::Upstream(name, upstream) => Some((name.clone(), upstream.clone())),
            RouteSink::Queued(_) => None,
        })
    }

    fn same_sinks(&self, sinks: &[RouteSink], emit_only: &[RouteSink]) -> bool {
        let same = |ours: &[RouteSink], theirs: &[RouteSink]| {
            ours.len() == theirs.len()
                && ours.iter().zip(theirs).all(|pair| match pair {
                    (RouteSink::Queued(a), RouteSink::Queued(b)) => Arc::ptr_eq(a, b),
                    (RouteSink::Upstream(_, a), RouteSink::Upstream(_, b)) => Arc::ptr_eq(a, b),
                    _ => false,
                })
        };
        same(&self.sinks, sinks) && same(&self.emit_only, emit_only)
    }
}

#[derive(Default)]
pub struct Router {
    /// Most literal first, so `/a/b` wins over `/a/{x}`.
    routes: Vec<Arc<Route>>,
    /// Routes fed by a source instead of clients.
    pub fed: Vec<Arc<Route>>,
}

impl Router {
    pub fn build(
        config: &Config,
        sinks: &Sinks,
        host: &Arc<FilterHost>,
        metrics: &Metrics,
        taps: &Taps,
        previous: &Router,
    ) -> anyhow::Result<Router> {
        let mut routes = Vec::new();
        for (name, route) in &config.routes {
            let resolve = |names: &[String]| -> Vec<RouteSink> {
                names
                    .iter()
                    .map(|s| sinks.get(s).expect("config validation checked sink names"))
                    .collect()
            };
            let (route_sinks, emit_only) = (resolve(&route.sinks), resolve(&route.emit_sinks));
            let unchanged = previous
                .routes
                .iter()
                .chain(&previous.fed)
                .find(|r| &*r.name == name && r.settings == *route && r.same_sinks(&route_sinks, &emit_only));
            if let Some(old) = unchanged {
                routes.push(old.clone());
                continue;
            }
            let sink_names = sink_names(route);
            let chain =
                Chain::build(host, &route.filters, &sink_names).map_err(|e| anyhow::anyhow!("routes.{name}: {e}"))?;
            routes.push(Arc::new(Route {
                name: name.as_str().into(),
                path: route
                    .path
                    .as_deref()
                    .map(RoutePath::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                settings: route.clone(),
                passes_through: config.passes_through(route),
                chain,
                sinks_by_name: route
                    .sinks
                    .iter()
                    .chain(&route.emit_sinks)
                    .cloned()
                    .zip(route_sinks.iter().chain(&emit_only).cloned())
                    .collect(),
                sinks: route_sinks,
                emit_only,
                sink_names,
                metrics: metrics.route(name),
                auth: Auth::build(name, &route.auth, metrics)
                    .map_err(|e| anyhow::anyhow!("routes.{name}.auth.jwt: {e}"))?,
                tap: taps.route(name),
                recorder: (route.record.clone()).map(|record| RouteRecorder::new(name, record)),
            }));
        }
        let (mut routes, fed): (Vec<_>, Vec<_>) = routes.into_iter().partition(|r| r.path.is_some());
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.as_ref().map(RoutePath::specificity)));
        Ok(Router { routes, fed })
    }

    /// Every route, client-facing (most literal first) then fed.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter().chain(&self.fed)
    }

    /// The route serving `path`, with its captures.
    pub fn find(&self, path: &str) -> Option<(Arc<Route>, Captures)> {
        self.routes.iter().find_map(|route| {
            let captures = route.path.as_ref()?.matches(path)?;
            Some((route.clone(), captures))
        })
    }

    /// The configs each filter module serves with (and the sinks of the routes that give
    /// them), for checking new module versions.
    pub fn filter_configs(config: &Config) -> HashMap<String, Vec<InitWith>> {
        let mut configs: HashMap<String, Vec<InitWith>> = HashMap::new();
        for route in config.routes.values() {
            let sinks = sink_names(route);
            for filter in &route.filters {
                let list = configs.entry(filter.module.clone()).or_default();
                let init = InitWith {
                    config: filter.config_json(),
                    sinks: sinks.clone(),
                };
                if !list.contains(&init) {
                    list.push(init);
                }
            }
        }
        configs
    }
}

/// The sinks a route's filters may `emit` to: its `sinks`, then its `emit_sinks`.
fn sink_names(route: &RouteConfig) -> Arc<[String]> {
    route.sinks.iter().chain(&route.emit_sinks).cloned().collect()
}
