//! The running proxy: builds sinks, sources, filters, routes and feeds from a config, applies a
//! reloaded config all at once or not at all, and shuts down in order.

pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::Config;
use crate::connectors::sinks::SinkContext;
use crate::connectors::{Catalog, Sinks, Sources};
use crate::feed::{FeedContext, Feeds};
use crate::filter::FilterHost;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::server::drain::DrainTimes;
use crate::server::{self, Edge};

pub struct Proxy {
    /// The file the config came from; `None` for the embedded default.
    pub config_path: Option<PathBuf>,
    /// The running config and the connectors parsed from it.
    config: Mutex<(Config, Catalog)>,
    /// What the listeners see: routes, sources, filters, health, shutdown.
    pub edge: Arc<Edge>,
    sinks: Mutex<Sinks>,
    /// Routes fed by `ws` sources, and those sources.
    feeds: Feeds,
    sink_context: SinkContext,
}

/// A reloaded file with no routes is far more often a file caught empty or half-written than an
/// operator's wish: it is refused (a proxy without routes can still be started).
fn refuse_empty(config: Config) -> anyhow::Result<Config> {
    anyhow::ensure!(
        !config.routes.is_empty(),
        "{}: refusing an empty config (no routes); keeping the current one",
        config.origin
    );
    Ok(config)
}

/// The addresses the proxy listens on, once bound.
pub struct Bound {
    pub ws: std::net::SocketAddr,
    pub admin: Option<std::net::SocketAddr>,
}

impl Proxy {
    pub fn new(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Arc<Proxy>> {
        let metrics = Arc::new(Metrics::default());
        let host = FilterHost::new(&config.filters, metrics.clone())?;
        // A new module version must pass its replay fixtures (`NAME.tests/`) before it is swapped in.
        host.set_swap_gate(crate::replay::fixtures::swap_gate(config.filters.dir.clone()));
        let bus = Bus::new(metrics.clone());
        let health = Arc::new(Health::default());
        let sink_context = SinkContext {
            bus: bus.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            tasks: TaskTracker::new(),
        };
        let sources = Arc::new(Sources::new(bus, metrics.clone(), health.clone()));
        let edge = Arc::new(Edge::new(
            sources.clone(),
            host,
            metrics.clone(),
            health.clone(),
            &config.server,
        ));
        let feeds = Feeds::new(FeedContext {
            sources,
            metrics,
            health,
            shutdown: edge.shutdown.clone(),
            sessions: edge.sessions.clone(),
        });
        let proxy = Arc::new(Proxy {
            config_path,
            config: Mutex::new((config.clone(), Catalog::default())),
            edge,
            sinks: Mutex::default(),
            feeds,
            sink_context,
        });
        proxy.apply(config)?;
        Ok(proxy)
    }

    /// Makes `config` live: sinks and routes that did not change keep running. Everything new
    /// is built first; a failure anywhere leaves the running config as it was.
    pub fn apply(&self, config: Config) -> anyhow::Result<()> {
        // Before anything can connect (and a client library print a URL).
        crate::logs::mask(&config.secrets);
        let mut sinks = self.sinks.lock().unwrap();
        let catalog = Catalog::parse(&config)?;
        let mut new_sinks = Sinks::build(&config, &catalog, &sinks, &self.sink_context)?;
        let router = Router::build(
            &config,
            &new_sinks,
            &self.edge.host,
            &self.edge.metrics,
            &self.edge.taps,
            &self.edge.router.load(),
        )?;
        // Built: from here on nothing can fail, and everything changes together.
        new_sinks.start(&self.sink_context.tasks);
        self.edge.sources.apply(&config, &catalog);
        self.edge.host.set_configs(Router::filter_configs(&config));
        self.feeds.apply(&config, &catalog, &router);
        self.edge.router.store(Arc::new(router));
        *sinks = new_sinks;
        let mut current = self.config.lock().unwrap();
        if current.0.server != config.server || current.0.filters != config.filters {
            tracing::warn!("changes under [server] and [filters] take effect at the next start");
        }
        *current = (config, catalog);
        Ok(())
    }

    /// Reads the config file again and applies it; a bad file changes nothing.
    pub fn reload_config(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        match Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(refuse_empty)
            .and_then(|c| self.apply(c))
        {
            Ok(()) => tracing::info!("config reloaded from {}", path.display()),
            Err(e) => {
                self.edge.metrics.config_reloads_refused.inc();
                tracing::error!("config reload refused, the running config stays: {e:#}");
            }
        }
    }

    /// The filter host: modules, versions, hot swap.
    pub fn host(&self) -> &Arc<FilterHost> {
        &self.edge.host
    }

    /// Binds the listeners and serves until shutdown.
    pub async fn bind(self: &Arc<Self>) -> anyhow::Result<Bound> {
        let server = {
            let current = self.config.lock().unwrap();
            self.feeds.start(&current.0, &current.1, &self.edge.router.load());
            current.0.server.clone()
        };
        let tls = server.tls.as_ref().map(server::tls_acceptor).transpose()?;
        let listener = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("server.listen: cannot listen on {}", server.listen))?;
        let ws = listener.local_addr()?;
        tokio::spawn(server::serve(self.edge.clone(), listener, tls));
        let admin = match server.admin {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("server.admin: cannot listen on {addr}"))?;
                let bound = listener.local_addr()?;
                tokio::spawn(server::admin::serve(
                    self.edge.clone(),
                    listener,
                    server.admin_token.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        Ok(Bound { ws, admin })
    }

    /// Turns `/readyz` 503, stops accepting after `drain_delay_ms`, tells connections to go
    /// (1001, once their records are answered) after `drain_period_ms`, spread over
    /// `close_spread_ms`, then lets sinks flush within the grace period.
    pub async fn shut_down(&self) {
        let (grace, times) = {
            let server = &self.config.lock().unwrap().0.server;
            let ms = Duration::from_millis;
            let times = DrainTimes {
                delay: ms(server.drain_delay_ms),
                period: ms(server.drain_period_ms),
                spread: ms(server.close_spread_ms),
            };
            (ms(server.shutdown_grace_ms), times)
        };
        self.edge.drain.run(times).await;
        self.edge.shutdown.cancel();
        self.edge.sessions.close();
        if tokio::time::timeout(grace, self.edge.sessions.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        self.edge.drain.flushing();
        // Dropping the routes and sinks closes the sink queues; each sink drains and ends.
        self.feeds.clear();
        self.edge.router.store(Arc::default());
        drop(std::mem::take(&mut *self.sinks.lock().unwrap()));
        let tasks = &self.sink_context.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("sinks did not flush within {grace:?}");
        }
    }
}
