//! Pass-through routes: no filters and a single `ws` sink (`ws://` or `wss://`: the upstream
//! leg is TLS when the URL says so), so no message is read. Two ways:
//! - `relay = "bytes"`: the client's upgrade request goes on to the upstream as it came, the
//!   upstream's answer comes back, and after a 101 both sockets are spliced with no frame parsed,
//!   as nginx and HAProxy relay. No message limit, no keepalive of framegate's own.
//! - `relay = "frames"` (the default): framegate makes its own upgrade to the upstream, as the
//!   message path does, and passes frames on in place (frames.rs): counted, limited, with pings.

pub(super) mod frames;

use std::future::Future;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::either::Either;

use super::{ConnectionSlot, Edge};
use crate::connectors::ws::Upstream;
use crate::route::Route;
use frames::{Closing, Duties, Flow, Frames};

/// Bytes read at once each way, by either relay: large enough for 4 KiB frames in bursts.
const RELAY_BUFFER: usize = 32 << 10;

/// Sends an upgrade request with `headers` (and the upstream's configured ones) to the upstream,
/// at `path`, over TCP or TLS; returns its 101 answer. One time limit covers it all.
async fn upgrade_upstream(
    upstream: &Upstream,
    path: String,
    mut headers: HeaderMap,
) -> Result<Response<Incoming>, String> {
    let shown = upstream.shown_url();
    let uri: Uri = upstream
        .options
        .url
        .parse()
        .map_err(|e| format!("upstream url {shown}: {e}"))?;
    let host = host_header(&uri).ok_or_else(|| format!("upstream url {shown} has no host"))?;
    headers.insert(header::HOST, host.parse().map_err(|e| format!("upstream host: {e}"))?);
    for (name, value) in upstream.options.extra_headers()? {
        if let Some(name) = name {
            headers.insert(name, value);
        }
    }
    let mut forward = Request::get(path)
        .body(Empty::<Bytes>::new())
        .expect("a path is a valid URI");
    *forward.headers_mut() = headers;
    let exchange = async {
        let answer = match upstream.open().await? {
            MaybeTlsStream::Plain(tcp) => send_upgrade(TokioIo::new(tcp), forward).await,
            MaybeTlsStream::Rustls(tls) => send_upgrade(TokioIo::new(tls), forward).await,
            _ => Err("an upstream stream of an unknown kind".to_string()),
        }?;
        if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("answered the upgrade with {}", answer.status()));
        }
        Ok(answer)
    };
    tokio::time::timeout(upstream.connect_timeout, exchange)
        .await
        .map_err(|_| format!("upstream {shown} did not answer within {:?}", upstream.connect_timeout))?
        .map_err(|e| format!("upstream {shown}: {e}"))
}

/// The Host header of requests to an upstream: the URL's host and port, never its credentials.
fn host_header(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?.as_str();
    Some(authority.rsplit_once('@').map_or(authority, |(_, host)| host))
}

/// The upgrade request on a connection of its own; the connection lives on in a task, through
/// the upgrade. A plain TCP connection keeps its type, so the relay can unwrap it (`halves`).
async fn send_upgrade<I>(io: I, request: Request<Empty<Bytes>>) -> Result<Response<Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection.with_upgrades());
    sender.send_request(request).await.map_err(|e| e.to_string())
}

/// Runs `relay` on both connections once the client's upgrade is done too, as a session of
/// the edge: it holds the connection's slot and is counted as active.
fn spawn_relay<Relay, Done>(
    edge: &Edge,
    route: Arc<Route>,
    slot: ConnectionSlot,
    request: &mut Request<Incoming>,
    answer: &mut Response<Incoming>,
    relay: Relay,
) where
    Relay: FnOnce(Arc<Route>, Upgraded, Upgraded) -> Done + Send + 'static,
    Done: Future<Output = ()> + Send,
{
    let (from_client, to_upstream) = (hyper::upgrade::on(request), hyper::upgrade::on(answer));
    edge.sessions.spawn(async move {
        let _slot = slot;
        let (Ok(client), Ok(upstream)) = (from_client.await, to_upstream.await) else {
            return;
        };
        route.metrics.opened.inc();
        route.metrics.active.inc();
        relay(route.clone(), client, upstream).await;
        route.metrics.active.dec();
    });
}

type Reader = Either<OwnedReadHalf, ReadHalf<TokioIo<Upgraded>>>;
type Writer = Either<OwnedWriteHalf, WriteHalf<TokioIo<Upgraded>>>;

/// An upgraded connection's two halves, and what hyper read of it ahead. A plain TCP connection
/// is unwrapped back to its socket, whose halves need no lock (tokio's `split` takes one on
/// every read and write, and hyper's upgraded stream is a boxed trait object); a TLS one is not.
fn halves(upgraded: Upgraded) -> (Bytes, Reader, Writer) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (reader, writer) = parts.io.into_inner().into_split();
            (parts.read_buf, Either::Left(reader), Either::Left(writer))
        }
        Err(upgraded) => {
            let (reader, writer) = tokio::io::split(TokioIo::new(upgraded));
            (Bytes::new(), Either::Right(reader), Either::Right(writer))
        }
    }
}

/// `relay = "bytes"`: hands the upgrade to the upstream and, on its 101, splices the two
/// connections.
pub async fn bytes(
    edge: &Arc<Edge>,
    route: Arc<Route>,
    upstream: &Upstream,
    mut request: Request<Incoming>,
    slot: ConnectionSlot,
) -> Result<Response<Full<Bytes>>, String> {
    let uri: Uri = upstream.options.url.parse().map_err(|e| format!("upstream url: {e}"))?;
    // The client's request, aimed at the upstream: same headers (key, protocols, extensions).
    let path = match request.uri().query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut answer = upgrade_upstream(upstream, path, request.headers().clone()).await?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer.headers().clone();
    let shutdown = edge.shutdown.clone();
    spawn_relay(
        edge,
        route,
        slot,
        &mut request,
        &mut answer,
        |route, client, upstream| async move {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            tokio::select! {
                copied = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER) => {
                    if let Ok((up, down)) = copied {
                        route.metrics.bytes_in.inc_by(up);
                        route.metrics.bytes_out.inc_by(down);
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        },
    );
    Ok(response)
}

/// `relay = "frames"` on a pass-through route: framegate's own upgrade to the upstream (no
/// sub-protocol, and no extension but the client's permessage-deflate offers, so frames are
/// valid on either side as they are), then both directions pass frames in place. Returns the
/// client's 101.
pub async fn frames(
    edge: &Arc<Edge>,
    route: Arc<Route>,
    upstream: &Upstream,
    client_key: &HeaderValue,
    mut request: Request<Incoming>,
    slot: ConnectionSlot,
) -> Result<Response<Full<Bytes>>, String> {
    let uri: Uri = upstream.options.url.parse().map_err(|e| format!("upstream url: {e}"))?;
    let key = generate_key();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        key.parse().expect("base64 is a valid header"),
    );
    // permessage-deflate goes end to end: the client's offers on, the upstream's answer back,
    // and compressed frames pass as they are. No other extension: the relay reads frame headers.
    let offers = deflate_offers(&request, &route);
    if let Some(offers) = &offers {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offers.clone());
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut answer = upgrade_upstream(upstream, path, headers).await?;
    let accepted = answer.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if accepted.map(|a| a.as_bytes()) != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(format!(
            "upstream {} answered with a wrong Sec-WebSocket-Accept",
            upstream.shown_url()
        ));
    }
    let agreed = answer.headers().get(header::SEC_WEBSOCKET_EXTENSIONS).cloned();
    if let Some(agreed) = &agreed
        && (offers.is_none() || !is_one_deflate_answer(agreed))
    {
        return Err(format!(
            "upstream {} chose an extension nobody asked for",
            upstream.shown_url()
        ));
    }
    let deflate = agreed.is_some();
    // The frames framegate writes upstream itself are masked with four random bytes of its key.
    let random = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .expect("generate_key gives base64");
    let mask = [random[0], random[1], random[2], random[3]];

    let shutdown = edge.shutdown.clone();
    spawn_relay(
        edge,
        route,
        slot,
        &mut request,
        &mut answer,
        move |route, client, upstream| async move {
            let settings = &route.settings;
            let ms = |ms: u64| (ms > 0).then(|| std::time::Duration::from_millis(ms));
            let up = Flow {
                frames: Frames::new(true, settings.max_message_size, deflate),
                duties: Duties {
                    idle: ms(settings.idle_timeout_ms),
                    mask: Some(mask),
                    ..Duties::default()
                },
                route: route.clone(),
                inbound: true,
            };
            let down = Flow {
                frames: Frames::new(false, settings.max_message_size, deflate),
                duties: Duties {
                    ping: ms(settings.ping_interval_ms)
                        .map(|period| tokio::time::interval_at(tokio::time::Instant::now() + period, period)),
                    on_end: Some((1001, "upstream closed")),
                    ..Duties::default()
                },
                route: route.clone(),
                inbound: false,
            };
            let closing = Arc::new(Closing::new(&shutdown));
            let (client_ahead, client_reader, client_writer) = halves(client);
            let (upstream_ahead, upstream_reader, upstream_writer) = halves(upstream);
            let down = tokio::spawn(down.run(upstream_ahead, upstream_reader, client_writer, closing.clone()));
            up.run(client_ahead, client_reader, upstream_writer, closing).await;
            let _ = down.await;
        },
    );

    let mut response = super::switching_protocols(client_key, None);
    if let Some(agreed) = agreed {
        response.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, agreed);
    }
    Ok(response)
}

/// The client's permessage-deflate offers, as it wrote them, when the route forwards them.
fn deflate_offers(request: &Request<Incoming>, route: &Route) -> Option<HeaderValue> {
    if !route.settings.deflate.enabled {
        return None;
    }
    let offers: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|offer| is_deflate(offer))
        .collect();
    (!offers.is_empty()).then(|| HeaderValue::from_str(&offers.join(", ")).expect("parts of a valid header"))
}

/// Whether an extension entry (`name; params`) is permessage-deflate.
fn is_deflate(entry: &str) -> bool {
    let name = entry.split(';').next().unwrap_or_default().trim();
    name.eq_ignore_ascii_case(crate::deflate::NAME)
}

/// Whether an upstream's answer chose permessage-deflate alone.
fn is_one_deflate_answer(answer: &HeaderValue) -> bool {
    answer
        .to_str()
        .is_ok_and(|answer| !answer.contains(',') && is_deflate(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_host_header() {
        let host = |url: &str| host_header(&url.parse().unwrap()).map(str::to_string);
        assert_eq!(host("ws://127.0.0.1:9001/feed?x=1").as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(host("wss://user:secret@example/").as_deref(), Some("example"));
        assert_eq!(host("/no/host"), None);
    }
}
