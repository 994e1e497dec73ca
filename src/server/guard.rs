//! What the listener's guards refuse and how they answer: the refusals (status, reason, metric
//! label), the answer written at accept without reading a request, and the checks of an upgrade
//! request (Sec-WebSocket-Key, HTTP version, Origin, the per-IP caps of a client a trusted proxy
//! names).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use http::{HeaderValue, Request, StatusCode, Version, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Edge;
use super::client_ip;
use super::limits::ConnectionSlot;
use crate::route::Route;

/// How long a connection refused at accept is read (and what it sent thrown away) after its
/// answer, so that closing it does not reset the answer away before the client read it.
const LINGER: Duration = Duration::from_secs(1);
/// The most a connection refused at accept may send meanwhile.
const LINGER_BYTES: usize = 64 << 10;

/// Why the edge turned a connection or an upgrade away; its text is the answer's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections")]
    Connections,
    #[error("too many upgrades in progress")]
    Handshakes,
    #[error("too many connections from your address")]
    ClientConnections,
    #[error("too many new connections from your address")]
    ClientRate,
    #[error("Sec-WebSocket-Key must be the base64 of 16 bytes")]
    BadKey,
    #[error("WebSocket needs HTTP/1.1")]
    HttpVersion,
    #[error("origin not allowed")]
    Origin,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Connections | Refusal::Handshakes => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::ClientConnections | Refusal::ClientRate => StatusCode::TOO_MANY_REQUESTS,
            Refusal::BadKey | Refusal::HttpVersion => StatusCode::BAD_REQUEST,
            Refusal::Origin => StatusCode::FORBIDDEN,
        }
    }

    /// The `reason` label of `framegate_edge_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections",
            Refusal::Handshakes => "upgrades_in_progress",
            Refusal::ClientConnections => "connections_per_ip",
            Refusal::ClientRate => "new_connections_per_ip",
            Refusal::BadKey => "bad_key",
            Refusal::HttpVersion => "http_version",
            Refusal::Origin => "origin",
        }
    }

    /// The answer, whole, for a connection whose request is not read.
    fn raw_answer(self) -> String {
        let status = self.status();
        let body = format!("{self}\n");
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
    }
}

/// Turns a connection away at accept, before its request is read: a plain-text answer written
/// at once (a plain TCP listener only; a TLS connection is closed, as its handshake costs more
/// than the answer is worth), then what the client sends is read and dropped for a moment.
pub async fn refuse_at_accept(mut stream: TcpStream, refusal: Refusal, tls: bool) {
    if tls {
        return;
    }
    let answer = async {
        stream.write_all(refusal.raw_answer().as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
}

/// A connection the guards let in: whom it is from and its place.
pub struct Connection {
    /// The client: the socket peer, or the source a trusted proxy's PROXY header gave.
    pub peer: SocketAddr,
    /// The peer is a trusted proxy that names its clients in X-Forwarded-For, per request.
    pub forwarded: bool,
    pub slot: ConnectionSlot,
}

/// Whether `key` is what RFC 6455 asks for: the base64 of 16 bytes.
pub(super) fn is_websocket_key(key: &HeaderValue) -> bool {
    let mut decoded = [0; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key.as_bytes(), &mut decoded)
            .is_ok_and(|n| n == 16)
}

/// The checks of an upgrade request the route and the listener's settings ask for. Gives the
/// client's address and the connection's place, holding the client IP's too when a trusted
/// proxy named the client.
pub fn check_upgrade(
    edge: &Edge,
    route: &Route,
    request: &Request<hyper::body::Incoming>,
    key: &HeaderValue,
    connection: &Connection,
) -> Result<(SocketAddr, ConnectionSlot), Refusal> {
    if request.version() < Version::HTTP_11 {
        return Err(Refusal::HttpVersion);
    }
    if !is_websocket_key(key) {
        return Err(Refusal::BadKey);
    }
    if let Some(origins) = &route.settings.origins
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or_default();
        if !origins.iter().any(|allowed| allowed.allows(origin)) {
            return Err(Refusal::Origin);
        }
    }
    if !connection.forwarded {
        return Ok((connection.peer, connection.slot.clone()));
    }
    let client = client_ip::forwarded_client(connection.peer.ip(), request.headers(), &edge.client_ip);
    let lease = edge.limits.admit_client(client)?;
    Ok((SocketAddr::new(client, 0), connection.slot.with_client(lease)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_base64_of_16_bytes() {
        let key = |text: &str| is_websocket_key(&HeaderValue::from_str(text).unwrap());
        assert!(key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!key(""));
        assert!(!key("x"));
        assert!(!key("dGhlIHNhbXBsZSBub25jZQ"), "unpadded");
        assert!(!key("dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!key("dGhlIHNhbXBsZSBub25jZXh4"), "18 bytes");
        assert!(!key(" dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn a_raw_answer_is_whole_http() {
        assert_eq!(
            Refusal::ClientConnections.raw_answer(),
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 39\r\n\
             connection: close\r\n\r\ntoo many connections from your address\n"
        );
    }
}
