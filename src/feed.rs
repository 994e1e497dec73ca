//! Routes fed by a source instead of clients (`feed = "SOURCE"`): each such route runs one
//! session whose far end is an outlet of a `ws` source, so the source's messages go through the
//! route's filters and to its sinks exactly as a client's would. The outlet is the bounded
//! queue between them: when it is full the source waits (and reads its socket no further) or
//! drops the oldest message, as configured. A reload restarts only what changed; an outlet
//! outlives its route's session, so no message waiting in it is lost.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connectors::ws::{Outlet, Runner, Upstream as Feeder};
use crate::connectors::{Catalog, SourceKind, Sources};
use crate::filter::abi::ConnState;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::route::{Route, Router};
use crate::session::{self, Client, Opening};

/// The far end of a fed route's session: reads come from the outlet; what the session writes
/// (a filter's `send`, pings) has nobody to go to and is dropped, except the close, which ends
/// the reads so that a closing session takes nothing more from the outlet.
struct FeedClient {
    outlet: Arc<Outlet>,
    meta: Vec<(String, Bytes)>,
    closed: bool,
}

impl Stream for FeedClient {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closed {
            return Poll::Ready(None);
        }
        self.outlet.poll_pop(cx).map(|message| {
            self.meta = message.meta;
            let message = match message.text {
                // The source read it as a text message: tungstenite checked it is UTF-8.
                true => {
                    Utf8Bytes::try_from(message.payload.clone()).map_or(Message::Binary(message.payload), Message::Text)
                }
                false => Message::Binary(message.payload),
            };
            Some(Ok(message))
        })
    }
}

impl Sink<Message> for FeedClient {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        if matches!(message, Message::Close(_)) {
            self.closed = true;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

impl Client for FeedClient {
    fn message_meta(&mut self) -> Vec<(String, Bytes)> {
        std::mem::take(&mut self.meta)
    }
}

/// What the feeds share with the rest of the proxy.
pub struct FeedContext {
    pub sources: Arc<Sources>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The proxy's shutdown; every feed stops with it.
    pub shutdown: CancellationToken,
    /// The proxy's sessions, which shutdown waits for.
    pub sessions: TaskTracker,
}

/// A running `ws` source.
struct Upstream {
    feeder: Arc<Feeder>,
    outlets: Arc<ArcSwap<Vec<Arc<Outlet>>>>,
    stop: CancellationToken,
}

/// A fed route's running session.
struct FedRoute {
    route: Arc<Route>,
    source: String,
    outlet: Arc<Outlet>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Running {
    upstreams: BTreeMap<String, Upstream>,
    routes: BTreeMap<String, FedRoute>,
}

pub struct Feeds {
    context: FeedContext,
    /// Nothing runs before the proxy serves (`framegate check` builds a proxy too).
    started: AtomicBool,
    running: Mutex<Running>,
}

/// The pause before a fed route's session is started again after it ended (a filter closed it).
const RESTART_PAUSE: Duration = Duration::from_secs(1);

impl Feeds {
    pub fn new(context: FeedContext) -> Feeds {
        Feeds {
            context,
            started: AtomicBool::new(false),
            running: Mutex::default(),
        }
    }

    /// Starts the feeds of `config`; from now on `apply` changes them.
    pub fn start(&self, config: &Config, catalog: &Catalog, router: &Router) {
        self.started.store(true, Ordering::Release);
        self.apply(config, catalog, router)
    }

    /// Makes the config's fed routes and their sources run; what did not change keeps running.
    pub fn apply(&self, config: &Config, catalog: &Catalog, router: &Router) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        let mut wanted: BTreeMap<String, Arc<Feeder>> = BTreeMap::new();
        for source in config.routes.values().filter_map(|r| r.feed.as_ref()) {
            if let Some(SourceKind::Feed(feeder)) = catalog.sources.get(source) {
                wanted.insert(source.clone(), feeder.clone());
            }
        }
        let mut running = self.running.lock().unwrap();
        let Running { upstreams, routes } = &mut *running;
        upstreams.retain(|name, upstream| {
            let keep = wanted.get(name).is_some_and(|f| f.options == upstream.feeder.options);
            if !keep {
                upstream.stop.cancel();
            }
            keep
        });
        for (name, feeder) in &wanted {
            if !upstreams.contains_key(name) {
                upstreams.insert(name.clone(), self.start_upstream(name, feeder.clone()));
            }
        }
        let mut previous = std::mem::take(routes);
        for route in &router.fed {
            let source = config.routes[&*route.name].feed.clone().expect("a fed route");
            let upstream = &upstreams[&source];
            let old = previous.remove(&*route.name);
            // The outlet stays while its source does: messages waiting in it are kept.
            let outlet = match &old {
                Some(old)
                    if old.source == source && upstream.outlets.load().iter().any(|o| Arc::ptr_eq(o, &old.outlet)) =>
                {
                    old.outlet.clone()
                }
                _ => Arc::new(Outlet::new(
                    upstream.feeder.options.queue,
                    self.context.metrics.feed(&source).dropped.clone(),
                )),
            };
            let fed = match old {
                Some(old) if Arc::ptr_eq(&old.route, route) && Arc::ptr_eq(&old.outlet, &outlet) => old,
                old => {
                    let before = old.map(|old| {
                        old.stop.cancel();
                        old.task
                    });
                    self.start_route(route.clone(), source, outlet, before)
                }
            };
            routes.insert(route.name.to_string(), fed);
        }
        for (_, gone) in previous {
            gone.stop.cancel();
        }
        for (name, upstream) in upstreams.iter() {
            let outlets: Vec<_> = routes
                .values()
                .filter(|r| &r.source == name)
                .map(|r| r.outlet.clone())
                .collect();
            upstream.outlets.store(Arc::new(outlets));
        }
    }

    /// Stops every feed and lets go of the routes (and so of their sinks): the end of shutdown.
    pub fn clear(&self) {
        let mut running = self.running.lock().unwrap();
        for upstream in running.upstreams.values() {
            upstream.stop.cancel();
        }
        for route in running.routes.values() {
            route.stop.cancel();
        }
        *running = Running::default();
    }

    fn start_upstream(&self, name: &str, feeder: Arc<Feeder>) -> Upstream {
        let stop = self.context.shutdown.child_token();
        let outlets = Arc::new(ArcSwap::default());
        let runner = Runner {
            name: name.into(),
            upstream: feeder.clone(),
            outlets: outlets.clone(),
            health: self
                .context
                .health
                .part(format!("sources.{name}"), &self.context.metrics),
            metrics: self.context.metrics.feed(name),
            stop: stop.clone(),
        };
        tokio::spawn(runner.run());
        Upstream { feeder, outlets, stop }
    }

    /// Runs a fed route's session, again after it ends, until stopped; `before` is the session
    /// it replaces, which ends first so that messages stay in order.
    fn start_route(
        &self,
        route: Arc<Route>,
        source: String,
        outlet: Arc<Outlet>,
        before: Option<JoinHandle<()>>,
    ) -> FedRoute {
        let stop = self.context.shutdown.child_token();
        let (sources, feed_outlet, feed_stop, feed_route) = (
            self.context.sources.clone(),
            outlet.clone(),
            stop.clone(),
            route.clone(),
        );
        let source_name = source.clone();
        let task = self.context.sessions.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            while !feed_stop.is_cancelled() {
                let mut conn = ConnState {
                    id: session::next_conn_id(),
                    sinks: feed_route.sink_names.clone(),
                    sources: sources.names(),
                    // A filter's send, replace and emit are bounded as on a client's route.
                    max_message_size: feed_route.settings.max_message_size,
                    meta_limit: feed_route.settings.meta_limit(),
                    ..ConnState::default()
                };
                let meta = Arc::make_mut(&mut conn.meta);
                meta.insert("conn.id".into(), Bytes::from(conn.id.to_string()));
                meta.insert("route".into(), Bytes::from(feed_route.name.to_string()));
                meta.insert("source.name".into(), Bytes::from(source_name.clone()));
                let (verdict, effects) = feed_route.chain.open(&mut conn);
                if let Err((status, _)) = verdict {
                    tracing::error!(
                        route = &*feed_route.name,
                        "the route's filters refused the feed ({status}); trying again"
                    );
                } else {
                    let opening = Opening {
                        route: feed_route.clone(),
                        conn,
                        effects,
                        upstream: None,
                        expires: None,
                        recording: None,
                    };
                    let client = FeedClient {
                        outlet: feed_outlet.clone(),
                        meta: Vec::new(),
                        closed: false,
                    };
                    session::run(client, opening, sources.clone(), feed_stop.clone()).await;
                    if feed_stop.is_cancelled() {
                        return;
                    }
                    tracing::warn!(
                        route = &*feed_route.name,
                        "the fed route's session ended (a filter closed it); starting again"
                    );
                }
                tokio::select! {
                    () = feed_stop.cancelled() => {}
                    () = tokio::time::sleep(RESTART_PAUSE) => {}
                }
            }
        });
        FedRoute {
            route,
            source,
            outlet,
            stop,
            task,
        }
    }
}
