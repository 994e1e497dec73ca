//! A connection's first metadata: what the host knows of it when the upgrade request arrives
//! (path captures, query, headers, peer).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::percent_decode_with;
use crate::types::Meta;

/// Headers of the handshake itself: no filter needs them, and every connection would carry them.
const HANDSHAKE_HEADERS: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];
/// What the host knows of a connection when the upgrade request arrives.
pub struct RequestInfo<'a> {
    pub conn_id: u64,
    pub route: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub peer: std::net::SocketAddr,
    pub captures: &'a [(String, String)],
    pub headers: &'a http::HeaderMap,
}

pub fn from_request(info: &RequestInfo<'_>) -> Meta {
    let mut meta = BTreeMap::new();
    let mut put = |k: String, v: &[u8]| {
        meta.insert(k, Bytes::copy_from_slice(v));
    };
    put("conn.id".into(), info.conn_id.to_string().as_bytes());
    put("route".into(), info.route.as_bytes());
    put("path".into(), info.path.as_bytes());
    put("peer".into(), info.peer.to_string().as_bytes());
    put("query".into(), info.query.as_bytes());
    for (name, value) in info.captures {
        put(format!("path.{name}"), value.as_bytes());
    }
    for pair in info.query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = format!("query.{}", percent_decode_with(name, true));
        // The first value of a repeated parameter wins.
        meta.entry(name)
            .or_insert_with(|| percent_decode_with(value, true).into_bytes().into());
    }
    for (name, value) in info
        .headers
        .iter()
        .filter(|(n, _)| !HANDSHAKE_HEADERS.contains(&n.as_str()))
    {
        let key = format!("header.{}", name.as_str());
        match meta.get_mut(&key) {
            // Repeated headers are joined as HTTP allows.
            Some(existing) => {
                let mut joined = existing.to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value.as_bytes());
                *existing = joined.into();
            }
            None => {
                meta.insert(key, Bytes::copy_from_slice(value.as_bytes()));
            }
        }
    }
    Arc::new(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_becomes_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.append("Hydra-Ack", "explicit".parse().unwrap());
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let meta = from_request(&RequestInfo {
            conn_id: 7,
            route: "r",
            path: "/in/k1",
            query: "a=1&b=x%20y&a=2&flag",
            peer: "127.0.0.1:5000".parse().unwrap(),
            captures: &[("ingestor".into(), "k1".into())],
            headers: &headers,
        });
        let get = |k: &str| meta.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(get("conn.id").as_deref(), Some("7"));
        assert_eq!(get("path.ingestor").as_deref(), Some("k1"));
        assert_eq!(get("query.a").as_deref(), Some("1"));
        assert_eq!(get("query.b").as_deref(), Some("x y"));
        assert_eq!(get("query.flag").as_deref(), Some(""));
        assert_eq!(get("header.hydra-ack").as_deref(), Some("explicit"));
        assert_eq!(get("header.x-a").as_deref(), Some("1, 2"));
    }
}
