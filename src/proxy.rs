//! The running proxy: builds sinks, filters and routes from a config, applies a reloaded config
//! without touching what did not change, counts connections, and shuts down in order.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::config::Config;
use crate::feed::{FeedContext, Feeds};
use crate::filter::FilterHost;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::server::router::Router;
use crate::sink::{SinkContext, Sinks};
use crate::source::Sources;

pub struct Proxy {
    /// The file the config came from; `None` for the embedded default.
    pub config_path: Option<PathBuf>,
    config: Mutex<Config>,
    pub router: ArcSwap<Router>,
    sinks: Mutex<Sinks>,
    pub host: Arc<FilterHost>,
    pub sources: Arc<Sources>,
    /// Routes fed by `ws` sources, and those sources.
    feeds: Feeds,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    sink_context: SinkContext,
    active: AtomicUsize,
    pub shutdown: CancellationToken,
    pub sessions: TaskTracker,
}

/// Holds one of `server.max_connections` places until dropped.
pub struct ConnectionSlot(Arc<Proxy>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
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
        let bus = Bus::new(metrics.clone());
        let health = Arc::new(Health::default());
        let sink_context = SinkContext {
            bus: bus.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            tasks: TaskTracker::new(),
        };
        let sources = Arc::new(Sources::new(bus, metrics.clone(), health.clone()));
        let shutdown = CancellationToken::new();
        let sessions = TaskTracker::new();
        let feeds = Feeds::new(FeedContext {
            sources: sources.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            sessions: sessions.clone(),
        });
        let proxy = Arc::new(Proxy {
            config_path,
            config: Mutex::new(config.clone()),
            router: ArcSwap::default(),
            sinks: Mutex::default(),
            host,
            sources,
            feeds,
            metrics,
            health,
            sink_context,
            active: AtomicUsize::new(0),
            shutdown,
            sessions,
        });
        proxy.apply(config)?;
        Ok(proxy)
    }

    /// Makes `config` live: sinks and routes that did not change keep running.
    pub fn apply(&self, config: Config) -> anyhow::Result<()> {
        let mut sinks = self.sinks.lock().unwrap();
        let new_sinks = Sinks::build(&config, &sinks, &self.sink_context)?;
        let router = Router::build(&config, &new_sinks, &self.host, &self.metrics, &self.router.load())?;
        // Sinks and routes took the config (sources' options were checked when it was parsed):
        // only now does anything change, all together.
        self.sources.apply(&config)?;
        self.host.set_configs(Router::filter_configs(&config));
        self.feeds.apply(&config, &router)?;
        self.router.store(Arc::new(router));
        *sinks = new_sinks;
        let mut current = self.config.lock().unwrap();
        if current.server != config.server || current.filters != config.filters {
            tracing::warn!("changes under [server] and [filters] take effect at the next start");
        }
        *current = config;
        Ok(())
    }

    /// Reads the config file again and applies it; a bad file changes nothing.
    pub fn reload_config(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        match Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|c| self.apply(c))
        {
            Ok(()) => tracing::info!("config reloaded from {}", path.display()),
            Err(e) => tracing::error!("config reload refused, the running config stays: {e:#}"),
        }
    }

    pub fn connection_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.config.lock().unwrap().server.max_connections;
        let taken = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.clone());
        (taken < max).then_some(slot)
    }

    /// Binds the listeners and serves until `shutdown` is cancelled.
    pub async fn bind(self: &Arc<Self>) -> anyhow::Result<Bound> {
        let server = self.config.lock().unwrap().server.clone();
        self.feeds.start(&self.config.lock().unwrap(), &self.router.load())?;
        let tls = server.tls.as_ref().map(crate::server::tls_acceptor).transpose()?;
        let listener = TcpListener::bind(server.listen)
            .await
            .with_context(|| format!("server.listen: cannot listen on {}", server.listen))?;
        let ws = listener.local_addr()?;
        tokio::spawn(crate::server::serve(self.clone(), listener, tls));
        let admin = match server.admin {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("server.admin: cannot listen on {addr}"))?;
                let bound = listener.local_addr()?;
                tokio::spawn(crate::server::admin::serve(self.clone(), listener));
                Some(bound)
            }
            None => None,
        };
        Ok(Bound { ws, admin })
    }

    /// Stops accepting, closes clients with 1001, then lets sinks flush within the grace period.
    pub async fn shut_down(&self) {
        let grace = Duration::from_millis(self.config.lock().unwrap().server.shutdown_grace_ms);
        self.shutdown.cancel();
        self.sessions.close();
        if tokio::time::timeout(grace, self.sessions.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        // Dropping the routes and sinks closes the sink queues; each sink drains and ends.
        self.feeds.clear();
        self.router.store(Arc::default());
        drop(std::mem::take(&mut *self.sinks.lock().unwrap()));
        let tasks = &self.sink_context.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("sinks did not flush within {grace:?}");
        }
    }
}
