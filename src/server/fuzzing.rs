//! The edge's readers of untrusted bytes, for the fuzz targets' bodies (src/fuzzing/) and
//! nothing else: built only with the `fuzzing` feature. Each entry runs the code the listener runs, in its order.

use std::net::{IpAddr, SocketAddr};

use futures_util::FutureExt;
use http::{Request, Version, header};

use super::client_ip::{self, ProxyHeaderError};
use super::guard::is_websocket_key;
use super::has_token;
use crate::config::{ClientIpConfig, DeflateConfig, OriginPattern, RoutePath};
use crate::session::request;
use crate::types::Meta;

pub use super::relay::frames::Frames;

/// A PROXY protocol v2 header at the start of `bytes`, read as a trusted proxy's connection is;
/// `bytes` is left after it.
pub fn proxy_header(bytes: &mut &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    client_ip::read_proxy_header(bytes)
        .now_or_never()
        .expect("reading a slice never waits")
}

/// How far an upgrade request got through the checks of `server::upgrade` and `guard`.
#[derive(Debug)]
pub enum Upgrade {
    NoRoute,
    NotAnUpgrade,
    Version,
    MissingKey,
    BadKey,
    Origin,
    /// Let in: the client the trusted proxy named, the connection's first metadata and the
    /// permessage-deflate answer, if any.
    Admitted {
        client: IpAddr,
        meta: Meta,
        deflate: Option<String>,
    },
}

/// An upgrade request as the listener checks it, against one route's path, origins and deflate
/// settings, from `peer`, a trusted proxy when `client_ip` trusts it.
pub fn upgrade<B>(
    request: &Request<B>,
    route: &RoutePath,
    origins: &[OriginPattern],
    client_ip: &ClientIpConfig,
    deflate: &DeflateConfig,
    peer: IpAddr,
) -> Upgrade {
    let path = request.uri().path();
    let Some(captures) = route.matches(path) else {
        return Upgrade::NoRoute;
    };
    let is_upgrade = request.method() == http::Method::GET
        && has_token(request, header::CONNECTION, "upgrade")
        && has_token(request, header::UPGRADE, "websocket");
    if !is_upgrade {
        return Upgrade::NotAnUpgrade;
    }
    let headers = request.headers();
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
        || request.version() < Version::HTTP_11
    {
        return Upgrade::Version;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Upgrade::MissingKey;
    };
    if !is_websocket_key(key) {
        return Upgrade::BadKey;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !origins.is_empty() && !origins.iter().any(|allowed| allowed.allows(origin)) {
            return Upgrade::Origin;
        }
    }
    let client = match client_ip.trusts(peer) {
        true => client_ip::forwarded_client(peer, headers, client_ip),
        false => peer,
    };
    let meta = request::from_request(&request::RequestInfo {
        conn_id: 1,
        route: "fuzz",
        path,
        query: request.uri().query().unwrap_or(""),
        peer: SocketAddr::new(client, 0),
        captures: &captures,
        headers,
    });
    let offers = (headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter()).filter_map(|v| v.to_str().ok());
    let deflate = crate::deflate::accept(offers, deflate).map(|(_, answer)| answer);
    Upgrade::Admitted { client, meta, deflate }
}
