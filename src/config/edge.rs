//! The edge guards' settings: `[server.limits]` (handshake deadline, head cap, per-IP caps),
//! `[server.client_ip]` (trusted proxies) and a route's `origins`, with the patterns they hold
//! parsed once, when the file is read.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The smallest head cap: hyper reads a request head in buffers of at least this size.
pub const MIN_HEAD_BYTES: usize = 8192;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLimits {
    /// From accept to the end of the request head (PROXY header and TLS handshake included).
    pub handshake_timeout_ms: u64,
    /// The largest request head; a larger one gets 431.
    pub max_head_bytes: usize,
    /// Connections accepted and not yet upgraded, all clients together.
    pub max_upgrades_in_progress: usize,
    /// Open connections (upgraded or not) of one client IP; 0: no cap.
    pub max_connections_per_ip: usize,
    /// New connections one client IP may open per second, on average (0.5: one every two
    /// seconds); 0: no cap.
    pub new_connections_per_ip_per_s: f64,
    /// New connections one client IP may open at once after a quiet spell; 0: one second's worth.
    pub new_connections_burst_per_ip: u32,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 10_000,
            max_head_bytes: 16 << 10,
            max_upgrades_in_progress: 1_000,
            max_connections_per_ip: 0,
            new_connections_per_ip_per_s: 0.0,
            new_connections_burst_per_ip: 0,
        }
    }
}

impl EdgeLimits {
    /// The first key (under `server.limits`) whose value cannot work, and what was expected.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.handshake_timeout_ms == 0 {
            return Err(("handshake_timeout_ms", "expected at least 1".into()));
        }
        if self.max_head_bytes < MIN_HEAD_BYTES {
            return Err(("max_head_bytes", format!("expected at least {MIN_HEAD_BYTES}")));
        }
        if !(self.new_connections_per_ip_per_s >= 0.0 && self.new_connections_per_ip_per_s.is_finite()) {
            return Err(("new_connections_per_ip_per_s", "expected 0 or more".into()));
        }
        if self.max_upgrades_in_progress == 0 {
            return Err(("max_upgrades_in_progress", "expected at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientIpConfig {
    /// Peers whose word on the client's address is taken: CIDRs or single addresses.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Trusted peers open each connection with a PROXY protocol v2 header (and their
    /// X-Forwarded-For is then ignored); otherwise their X-Forwarded-For is read.
    pub proxy_protocol: bool,
}

impl ClientIpConfig {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.0.contains(&ip))
    }
}

/// A trusted proxy's network: `10.0.0.0/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(pub IpNet);

impl TryFrom<String> for TrustedProxy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let net = match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => text
                .parse::<IpNet>()
                .map_err(|_| format!("expected a CIDR such as \"10.0.0.0/8\" or an address, got {text:?}"))?,
        };
        Ok(TrustedProxy(net.trunc()))
    }
}

impl From<TrustedProxy> for String {
    fn from(proxy: TrustedProxy) -> String {
        proxy.0.to_string()
    }
}

/// One entry of a route's `origins`: `https://app.example.com`, `http://localhost:3000`, or
/// `https://*.example.com` (any subdomain, at any depth, not the bare domain).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct OriginPattern {
    text: String,
    scheme: String,
    /// The host with its `*.` taken off for a wildcard.
    host: String,
    wildcard: bool,
    /// `None` when the origin has no port (the scheme's default).
    port: Option<u16>,
}

impl TryFrom<String> for OriginPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let expected = || {
            format!("expected an origin such as \"https://app.example.com\" or \"https://*.example.com\", got {text:?}")
        };
        let (scheme, host, port) = split_origin(&text).ok_or_else(expected)?;
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err(expected());
        }
        Ok(OriginPattern {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
            text,
        })
    }
}

impl From<OriginPattern> for String {
    fn from(pattern: OriginPattern) -> String {
        pattern.text
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl OriginPattern {
    /// Whether a request's `Origin` header (as browsers serialize it: scheme, host, port when
    /// not the default) is one this pattern allows.
    pub fn allows(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = split_origin(origin) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) || port != self.port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.host
        }
    }
}

/// `scheme://host[:port]` into its parts; `None` for anything else (a path, credentials, `null`).
fn split_origin(text: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = text.split_once("://")?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    // An IPv6 host is bracketed: the port is what follows the closing bracket.
    let (host, port) = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains(']') => (&rest[..colon], Some(rest[colon + 1..].parse().ok()?)),
        _ => (rest, None),
    };
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> OriginPattern {
        OriginPattern::try_from(text.to_string()).unwrap()
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let app = pattern("https://App.example.com");
        assert!(app.allows("https://app.example.com"));
        assert!(app.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(!app.allows("http://app.example.com"));
        assert!(!app.allows("https://app.example.com:8443"));
        assert!(!app.allows("https://app.example.com.evil.net"));
        assert!(!app.allows("null"));
        assert!(!app.allows(""));
        let local = pattern("http://localhost:3000");
        assert!(local.allows("http://localhost:3000"));
        assert!(!local.allows("http://localhost"));
        assert!(pattern("http://[::1]:8080").allows("http://[::1]:8080"));
        assert!(pattern("http://[::1]").allows("http://[::1]"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let any = pattern("https://*.example.com");
        assert!(any.allows("https://a.example.com"));
        assert!(any.allows("https://a.b.example.com"));
        assert!(!any.allows("https://example.com"));
        assert!(!any.allows("https://evilexample.com"));
        assert!(!any.allows("https://.example.com"));
        assert!(!any.allows("http://a.example.com"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for text in [
            "app.example.com",
            "https://",
            "https://a.example.com/",
            "https://*",
            "https://a.*.com",
            "https://a.example.com:port",
            "*",
            "null",
        ] {
            assert!(OriginPattern::try_from(text.to_string()).is_err(), "{text}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks_or_addresses() {
        let config = ClientIpConfig {
            trusted_proxies: ["10.0.0.0/8", "127.0.0.2", "fd00::/8"]
                .map(|t| TrustedProxy::try_from(t.to_string()).unwrap())
                .to_vec(),
            proxy_protocol: false,
        };
        assert!(config.trusts("10.1.2.3".parse().unwrap()));
        assert!(config.trusts("127.0.0.2".parse().unwrap()));
        assert!(config.trusts("::ffff:10.0.0.1".parse().unwrap()), "v4-mapped v6");
        assert!(config.trusts("fd12::1".parse().unwrap()));
        assert!(!config.trusts("127.0.0.1".parse().unwrap()));
        assert!(TrustedProxy::try_from("10.0.0.0/33".to_string()).is_err());
        assert!(TrustedProxy::try_from("proxy.local".to_string()).is_err());
    }

    #[test]
    fn a_config_file_names_the_key() {
        use crate::config::Config;
        let e = Config::parse("[server.limits]\nmax_head_bytes = 1024\n", "test.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "test.toml: server.limits.max_head_bytes: expected at least 8192");
        let e = Config::parse("[routes.a]\npath = \"/a\"\norigins = [\"example.com\"]\n", "test.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("expected an origin such as"), "{e}");
        let config = Config::parse(
            "[server.client_ip]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n\
             [routes.a]\npath = \"/a\"\norigins = [\"https://*.example.com\"]\n",
            "test.toml",
        )
        .unwrap();
        assert!(config.server.client_ip.trusts("192.0.2.1".parse().unwrap()));
        assert!(config.routes["a"].origins.as_ref().unwrap()[0].allows("https://a.example.com"));
    }

    #[test]
    fn limits_that_cannot_work_are_named() {
        let limits = EdgeLimits {
            max_head_bytes: 100,
            ..EdgeLimits::default()
        };
        assert_eq!(limits.check().unwrap_err().0, "max_head_bytes");
        assert!(EdgeLimits::default().check().is_ok());
    }
}
