//! Byte relay for pass-through routes (`relay = "bytes"`): the client's upgrade request goes on
//! to the upstream as it came, the upstream's answer comes back, and after a 101 both sockets
//! are spliced with no frame parsed, as nginx and HAProxy relay. No filter, no message limit,
//! no keepalive of framegate's own: what a route without filters does not need.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::router::Route;
use crate::proxy::{ConnectionSlot, Proxy};
use crate::sink::ws;

/// Bytes read at once each way: large enough for 4 KiB frames in bursts.
const RELAY_BUFFER: usize = 32 << 10;

/// Where a `ws://host:port/path` upstream is, for a plain TCP connection.
fn target(url: &str) -> Result<(String, Uri), String> {
    let uri: Uri = url.parse().map_err(|e| format!("upstream url {url:?}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("upstream url {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    Ok((format!("{host}:{port}"), uri))
}

/// Hands the upgrade to the upstream and, on its 101, splices the two connections.
pub async fn relay(
    proxy: &Arc<Proxy>,
    route: Arc<Route>,
    upstream: &ws::Options,
    mut request: Request<Incoming>,
    slot: ConnectionSlot,
) -> Result<Response<Full<Bytes>>, String> {
    let (address, uri) = target(&upstream.url)?;
    let timeout = std::time::Duration::from_millis(upstream.connect_timeout_ms);
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("upstream {} did not answer within {timeout:?}", upstream.url))?
        .map_err(|e| format!("upstream {}: {e}", upstream.url))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("upstream {}: {e}", upstream.url))?;
    tokio::spawn(connection.with_upgrades());

    // The client's request, aimed at the upstream: same headers (key, protocols, extensions).
    let path = match request.uri().query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut forward = Request::get(path)
        .body(Empty::<Bytes>::new())
        .expect("a path is a valid URI");
    *forward.headers_mut() = request.headers().clone();
    forward.headers_mut().insert(
        header::HOST,
        address.parse().map_err(|e| format!("upstream host: {e}"))?,
    );
    let mut answer = sender
        .send_request(forward)
        .await
        .map_err(|e| format!("upstream {}: {e}", upstream.url))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!(
            "upstream {} answered the upgrade with {}",
            upstream.url,
            answer.status()
        ));
    }

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer.headers().clone();
    let from_client = hyper::upgrade::on(&mut request);
    let to_upstream = hyper::upgrade::on(&mut answer);
    let shutdown = proxy.shutdown.clone();
    proxy.sessions.spawn(async move {
        let _slot = slot;
        let (Ok(client), Ok(upstream)) = (from_client.await, to_upstream.await) else {
            return;
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        route.metrics.opened.inc();
        route.metrics.active.inc();
        tokio::select! {
            copied = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER) => {
                if let Ok((up, down)) = copied {
                    route.metrics.bytes_in.inc_by(up);
                    route.metrics.bytes_out.inc_by(down);
                }
            }
            _ = shutdown.cancelled() => {}
        }
        route.metrics.active.dec();
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_address() {
        let (address, uri) = target("ws://127.0.0.1:9001/feed?x=1").unwrap();
        assert_eq!((address.as_str(), uri.path()), ("127.0.0.1:9001", "/feed"));
        assert_eq!(target("ws://example/").unwrap().0, "example:80");
    }
}
