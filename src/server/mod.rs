//! Listeners: accepts TCP (and TLS) connections, speaks HTTP/1.1 with hyper, answers what is
//! not a WebSocket upgrade (404, 426, 503), runs the chain's open hook, and hands upgraded
//! connections to a session. Knows no protocol beyond HTTP and WebSocket.

pub mod admin;
mod relay;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Relay;
use crate::connectors::Sources;
use crate::connectors::ws::ws_config;
use crate::filter::FilterHost;
use crate::filter::abi::ConnState;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::session::{self, Opening, next_conn_id, request};

pub use tls::acceptor as tls_acceptor;

/// What the listeners share with the proxy that runs them: the current routes, the parts a
/// connection or an admin answer needs, and the count of open connections.
pub struct Edge {
    /// Swapped whole when a config is applied.
    pub router: ArcSwap<Router>,
    pub sources: Arc<Sources>,
    pub host: Arc<FilterHost>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
    /// Every connection's task, which shutdown waits for.
    pub sessions: TaskTracker,
    max_connections: usize,
    active: AtomicUsize,
}

/// Holds one of `server.max_connections` places until dropped.
pub struct ConnectionSlot(Arc<Edge>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Edge {
    pub fn new(
        sources: Arc<Sources>,
        host: Arc<FilterHost>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        max_connections: usize,
    ) -> Edge {
        Edge {
            router: ArcSwap::default(),
            sources,
            host,
            metrics,
            health,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            max_connections,
            active: AtomicUsize::new(0),
        }
    }

    /// A place for one more connection, if there is one.
    pub fn connection_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let taken = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.clone());
        (taken < self.max_connections).then_some(slot)
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// Accepts connections until shutdown.
pub async fn serve(edge: Arc<Edge>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = edge.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_http(edge, TokioIo::new(stream), peer).await,
                    Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                },
                None => serve_http(edge, TokioIo::new(stream), peer).await,
            }
        });
    }
}

async fn serve_http<I>(edge: Arc<Edge>, io: I, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let edge = edge.clone();
        async move { Ok::<_, Infallible>(upgrade(edge, request, peer).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}

/// Whether a header holds a token, as `Connection: keep-alive, Upgrade` does.
fn has_token(request: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn upgrade(edge: Arc<Edge>, mut request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = request.uri().path().to_string();
    let Some((route, captures)) = edge.router.load().find(&path) else {
        return respond(StatusCode::NOT_FOUND, format!("no route for {path}\n"));
    };
    let is_upgrade = request.method() == http::Method::GET
        && has_token(&request, header::CONNECTION, "upgrade")
        && has_token(&request, header::UPGRADE, "websocket");
    if !is_upgrade {
        route.metrics.refused(426);
        let mut response = respond(StatusCode::UPGRADE_REQUIRED, "this route speaks WebSocket\n");
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    if request
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        route.metrics.refused(426);
        let mut response = respond(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        route.metrics.refused(400);
        return respond(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let Some(_slot) = edge.connection_slot() else {
        route.metrics.refused(503);
        return respond(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    if route.passes_through {
        let (_, upstream) = route.upstream().expect("a pass-through route has a ws sink");
        let relayed = match route.settings.relay {
            Relay::Bytes => relay::bytes(&edge, route.clone(), &upstream, request, _slot).await,
            Relay::Frames => relay::frames(&edge, route.clone(), &upstream, &key, request, _slot).await,
        };
        return relayed.unwrap_or_else(|reason| {
            tracing::warn!("{reason}");
            route.metrics.refused(502);
            respond(StatusCode::BAD_GATEWAY, format!("{reason}\n"))
        });
    }

    let id = next_conn_id();
    let query = request.uri().query().unwrap_or("").to_string();
    let mut conn = ConnState {
        id,
        meta: request::from_request(&request::RequestInfo {
            conn_id: id,
            route: &route.name,
            path: &path,
            query: &query,
            peer,
            captures: &captures,
            headers: request.headers(),
        }),
        sinks: route.sink_names.clone(),
        sources: edge.sources.names(),
        max_message_size: route.settings.max_message_size,
        meta_limit: route.settings.meta_limit(),
        ..ConnState::default()
    };
    let (verdict, effects) = route.chain.open(&mut conn);
    if let Err((status, body)) = verdict {
        route.metrics.refused(status);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return respond(status, body);
    }
    let upstream = match route.upstream() {
        Some((name, upstream)) => match upstream.connect(route.settings.max_message_size).await {
            Ok(stream) => Some((name, Box::new(stream))),
            Err(reason) => {
                tracing::warn!(conn = id, "{reason}");
                route.metrics.refused(502);
                return respond(StatusCode::BAD_GATEWAY, format!("{reason}\n"));
            }
        },
        None => None,
    };

    let on_upgrade = hyper::upgrade::on(&mut request);
    let opening = Opening {
        route: route.clone(),
        conn,
        effects,
        upstream,
    };
    let sources = edge.sources.clone();
    let shutdown = edge.shutdown.clone();
    let config = ws_config(route.settings.max_message_size);
    edge.sessions.spawn(async move {
        let _slot = _slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                session::run(stream, opening, sources, shutdown).await;
            }
            Err(e) => tracing::debug!(conn = id, "upgrade failed: {e}"),
        }
    });

    switching_protocols(&key)
}

/// The 101 that accepts a client's upgrade: no sub-protocol, no extension.
fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut response = respond(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    response
}
