//! The request head and the upgrade checks: raw bytes from a client (after a trusted proxy's
//! PROXY v2 header when the first byte says so), the head parsed as hyper parses it (httparse),
//! then every check of an upgrade (src/server/fuzzing.rs: route match, Connection/Upgrade
//! tokens, version, Sec-WebSocket-Key, Origin, X-Forwarded-For, the first metadata, the
//! permessage-deflate offer). Nothing panics; what is admitted has a key of 16 bytes and a
//! client address the request or the peer gave.

use std::net::IpAddr;

use crate::config::{ClientIpConfig, DeflateConfig, OriginPattern, RoutePath, TrustedProxy};
use crate::server::fuzzing::{self, Upgrade};

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let Some((&mode, mut data)) = data.split_first() else {
        return;
    };
    let mut peer: IpAddr = [10, 0, 0, 1].into();
    if mode & 1 != 0 {
        let Ok(header) = fuzzing::proxy_header(&mut data) else {
            return;
        };
        peer = header.map_or(peer, |address| address.ip());
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = head.parse(data) else {
        return;
    };
    let mut request = http::Request::builder()
        .method(head.method.unwrap_or("GET"))
        .uri(head.path.unwrap_or("/"))
        .version(if head.version == Some(0) {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        });
    for header in head.headers.iter() {
        request = request.header(header.name, header.value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let route = RoutePath::parse(if mode & 2 != 0 { "/t/{tenant}/ws" } else { "/ws" }).expect("a template");
    let origins: Vec<OriginPattern> = match mode & 4 {
        0 => Vec::new(),
        _ => vec![OriginPattern::try_from("https://*.example.com".to_string()).expect("a pattern")],
    };
    let client_ip = ClientIpConfig {
        trusted_proxies: vec![TrustedProxy::try_from("10.0.0.0/8".to_string()).expect("a CIDR")],
        proxy_protocol: mode & 1 != 0,
    };
    let deflate = DeflateConfig::default();
    if let Upgrade::Admitted { client, meta, .. } =
        fuzzing::upgrade(&request, &route, &origins, &client_ip, &deflate, peer)
    {
        assert!(client == peer || request.headers().contains_key("x-forwarded-for"));
        assert!(meta.contains_key("path"));
    }
}
