//! Listeners: accepts TCP (and TLS) connections, speaks HTTP/1.1 with hyper, answers what is
//! not a WebSocket upgrade (404, 426, 503), runs the chain's open hook, and hands upgraded
//! connections to a session. Knows no protocol beyond HTTP and WebSocket. The guards before the
//! upgrade (deadline, head cap, per-IP caps, client IP, Origin) are in limits.rs, guard.rs,
//! client_ip.rs and accept.rs.

mod accept;
pub mod admin;
mod client_ip;
mod console;
pub mod drain;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod limits;
mod relay;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ClientCert;
use crate::config::{ClientIpConfig, ConsoleConfig, Relay, ServerConfig};
use crate::connectors::Sources;
use crate::connectors::ws::ws_config;
use crate::deflate;
use crate::filter::FilterHost;
use crate::filter::abi::ConnState;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::route::{Route, Router};
use crate::session::{self, Opening, next_conn_id, request};
use crate::tap::Taps;
use accept::Acceptor;
use drain::Drain;
use guard::Connection;
use limits::Limits;

pub use limits::ConnectionSlot;
pub use tls::acceptor as tls_acceptor;

/// What the listeners share with the proxy that runs them: the current routes, the parts a
/// connection or an admin answer needs, and the guards' counts.
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
    /// The routes' live taps, which the console watches.
    pub taps: Arc<Taps>,
    /// The console's settings, read at start.
    pub console: ConsoleConfig,
    /// The phases of a graceful shutdown: `/readyz`, the listener, the waves of 1001s.
    pub drain: Drain,
    limits: Arc<Limits>,
    client_ip: ClientIpConfig,
    handshake_timeout: Duration,
    max_head_bytes: usize,
}

impl Edge {
    pub fn new(
        sources: Arc<Sources>,
        host: Arc<FilterHost>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        server: &ServerConfig,
    ) -> Edge {
        let shutdown = CancellationToken::new();
        Edge {
            drain: Drain::new(&shutdown, metrics.shutdown_phase.clone()),
            router: ArcSwap::default(),
            sources,
            host,
            limits: Arc::new(Limits::new(server.max_connections, &server.limits, metrics.edge())),
            metrics,
            health,
            shutdown,
            sessions: TaskTracker::new(),
            taps: Arc::new(Taps::new(&server.console)),
            console: server.console.clone(),
            client_ip: server.client_ip.clone(),
            handshake_timeout: Duration::from_millis(server.limits.handshake_timeout_ms),
            max_head_bytes: server.limits.max_head_bytes,
        }
    }
}

type Body = Full<Bytes>;

/// An answer that ends the connection: a connection that is not upgraded has nothing more to
/// ask, and keeping it open would let it outlive the handshake deadline.
fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Accepts connections until shutdown.
pub async fn serve(edge: Arc<Edge>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut acceptor = Acceptor::new(listener, "ws", edge.metrics.edge().accept_errors);
    while let Some((stream, peer)) = acceptor.next(edge.drain.listener()).await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(handshake(edge.clone(), stream, peer, tls.clone()));
    }
}

/// One connection up to its upgrade: whom it is from, the guards' admission, TLS and the
/// request head, all within `handshake_timeout_ms` of the accept.
async fn handshake(edge: Arc<Edge>, mut stream: TcpStream, peer: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) {
    let deadline = Instant::now() + edge.handshake_timeout;
    let metrics = edge.metrics.edge();
    let trusted = edge.client_ip.trusts(peer.ip());
    let mut client = peer;
    if trusted && edge.client_ip.proxy_protocol {
        match tokio::time::timeout_at(deadline, client_ip::read_proxy_header(&mut stream)).await {
            Ok(Ok(named)) => client = named.unwrap_or(peer),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "{e}");
                return metrics.refused("proxy_header");
            }
            Err(_) => return metrics.refused(HANDSHAKE_TIMEOUT),
        }
    }
    // A trusted proxy that does not speak the PROXY protocol names its clients per request.
    let forwarded = trusted && !edge.client_ip.proxy_protocol;
    let admitted = match edge.limits.admit((!forwarded).then_some(client.ip())) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            metrics.refused(refusal.label());
            return guard::refuse_at_accept(stream, refusal, tls.is_some()).await;
        }
    };
    let connection = Connection {
        peer: client,
        forwarded,
        slot: admitted.slot,
    };
    match tls {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let cert = tls::client_cert(&stream);
                serve_http(edge, TokioIo::new(stream), connection, deadline, cert).await
            }
            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => metrics.refused(HANDSHAKE_TIMEOUT),
        },
        None => serve_http(edge, TokioIo::new(stream), connection, deadline, None).await,
    }
    drop(admitted.handshake);
}

/// The `reason` of a connection cut at the handshake deadline.
const HANDSHAKE_TIMEOUT: &str = "handshake_timeout";

/// HTTP until the upgrade: one request (every answer but a 101 closes the connection, see
/// `respond`), whose head must arrive by `deadline` and be at most `max_head_bytes`; `cert` is
/// the connection's verified client certificate (mTLS), handed to the request in its extensions.
async fn serve_http<I>(edge: Arc<Edge>, io: I, connection: Connection, deadline: Instant, cert: Option<Arc<ClientCert>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let metrics = edge.metrics.edge();
    let (peer, max_head) = (connection.peer, edge.max_head_bytes);
    let connection = Arc::new(connection);
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        if let Some(cert) = &cert {
            request.extensions_mut().insert(cert.clone());
        }
        let (edge, connection) = (edge.clone(), connection.clone());
        async move { Ok::<_, Infallible>(upgrade(edge, request, &connection).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadline.saturating_duration_since(Instant::now()))
        .max_buf_size(max_head)
        .max_header_size(max_head)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    match served {
        Err(e) if e.is_timeout() => metrics.refused(HANDSHAKE_TIMEOUT),
        Err(e) if e.is_parse_too_large() => metrics.refused("head_too_large"),
        Err(e) => tracing::debug!(%peer, "HTTP connection ended: {e}"),
        // hyper ends a connection that sent nothing by the deadline as if it had closed.
        Ok(()) if !requested.load(Ordering::Relaxed) && Instant::now() >= deadline => {
            metrics.refused(HANDSHAKE_TIMEOUT)
        }
        Ok(()) => {}
    }
}

/// Whether a header holds a token, as `Connection: keep-alive, Upgrade` does.
fn has_token<B>(request: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn upgrade(edge: Arc<Edge>, mut request: Request<Incoming>, connection: &Connection) -> Response<Body> {
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
    let (peer, _slot) = match guard::check_upgrade(&edge, &route, &request, &key, connection) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            edge.metrics.edge().refused(refusal.label());
            route.metrics.refused(refusal.status().as_u16());
            return respond(refusal.status(), format!("{refusal}\n"));
        }
    };
    let identity = match route.auth.admit(&mut request).await {
        Ok(identity) => identity,
        Err(refusal) => {
            route.metrics.refused(refusal.status());
            return refusal.into_response();
        }
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
    Arc::make_mut(&mut conn.meta).extend(identity.meta);
    let recording = route.recorder.as_ref().and_then(|recorder| recorder.start(&mut conn));
    let (verdict, effects) = route.chain.open(&mut conn);
    if let Err((status, body)) = verdict {
        route.metrics.refused(status);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return respond(status, body);
    }
    let upstream = match route.upstream() {
        Some((name, upstream)) => match upstream
            .connect(
                route.settings.max_message_size,
                edge.metrics.upstream(&format!("sinks.{name}")),
            )
            .await
        {
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
        expires: identity.expires,
        recording,
    };
    let sources = edge.sources.clone();
    let shutdown = edge.drain.wave_of(id);
    let max_message_size = route.settings.max_message_size;
    let deflate = negotiate_deflate(&request, &route);
    let extension = deflate.as_ref().map(|(_, answer)| answer.clone());
    let deflate = deflate.map(|(options, _)| (options, route.metrics.deflate.clone()));
    edge.sessions.spawn(async move {
        let _slot = _slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                // Each session boxed: a task is as big as the larger of its two arms would make
                // it, and the compressed session's future is the bigger, which every idle
                // uncompressed connection would carry (12.2 KiB per idle plain connection
                // unboxed, 10.9 boxed).
                match deflate {
                    Some((options, counters)) => {
                        let config = ws_config(deflate::compressed_limit(max_message_size));
                        let stream =
                            WebSocketStream::from_raw_socket(deflate::Marked::new(io), Role::Server, Some(config))
                                .await;
                        let stream = deflate::Deflating::new(stream, options, counters);
                        Box::pin(session::run(stream, opening, sources, shutdown)).await;
                    }
                    None => {
                        let config = ws_config(max_message_size);
                        let stream = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        Box::pin(session::run(stream, opening, sources, shutdown)).await;
                    }
                }
            }
            Err(e) => tracing::debug!(conn = id, "upgrade failed: {e}"),
        }
    });

    let mut response = switching_protocols(&key, identity.protocol);
    if let Some(answer) = extension {
        response.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    response
}

/// permessage-deflate for a route with filters: the first of the client's offers the route's
/// `deflate` settings can honour, and the answer for the 101.
fn negotiate_deflate(request: &Request<Incoming>, route: &Route) -> Option<(deflate::Options, HeaderValue)> {
    let config = &route.settings.deflate;
    let offers = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (agreed, answer) = deflate::accept(offers, config)?;
    let options = deflate::Options::new(agreed, config, route.settings.max_message_size);
    Some((
        options,
        HeaderValue::from_str(&answer).expect("an answer is a valid header"),
    ))
}

/// The 101 that accepts a client's upgrade: no sub-protocol but the one offered beside a token
/// entry (src/auth/token.rs); an extension agreed is added by the caller.
fn switching_protocols(key: &HeaderValue, protocol: Option<HeaderValue>) -> Response<Body> {
    let mut response = respond(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    if let Some(protocol) = protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}
