//! The typed options of a route's authentication (`[routes.NAME.auth]`) and of the listener's
//! client certificates (`[server.tls]`): JWT keys, checks and token sources, required claims,
//! client-certificate rules. Only the options: the checks themselves live in src/auth/.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// `[routes.NAME.auth]`: who may open a connection on the route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A JSON Web Token the client must present.
    pub jwt: Option<JwtConfig>,
    /// What a verified client certificate (mTLS, `server.tls.client_ca`) counts for here.
    pub client_cert: Option<ClientCertRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertRule {
    /// No connection without one (403), and a token too when `jwt` is set.
    Required,
    /// A client with one needs no token; a client without one needs the token.
    Sufficient,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The algorithms a token may be signed with; anything else is refused.
    pub algorithms: Vec<JwtAlgorithm>,
    /// A PEM public key, or a JWKS (a JSON file with `keys`).
    pub key_file: Option<PathBuf>,
    /// The HS256 secret: the file's bytes (a final newline left out).
    pub secret_file: Option<PathBuf>,
    /// A JWKS served over http:// or https://: fetched at start and every `jwks_refresh_ms`.
    pub jwks_url: Option<String>,
    /// A PEM bundle of the CAs to trust for an https:// `jwks_url` instead of the system's.
    pub jwks_ca: Option<PathBuf>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_ms: u64,
    /// A token naming a key the set does not have refetches the set, at most this often.
    #[serde(default = "default_refetch")]
    pub jwks_refetch_min_ms: u64,
    /// Accepted `iss` values; any when empty.
    #[serde(default, deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one of them must be in the token); a token with an `aud` is
    /// refused when this is empty.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// Where the token is looked for, in this order.
    #[serde(default = "default_sources")]
    pub tokens: Vec<TokenSource>,
    /// The query parameter of the `query` source.
    #[serde(default = "default_token_name")]
    pub query_param: String,
    /// The cookie of the `cookie` source.
    #[serde(default = "default_token_name")]
    pub cookie: String,
    /// Claims the token must carry: a value, one of a list, or `{ contains = ... }`.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimRule>,
    /// Close a live connection (1008, "token expired") when its token expires.
    #[serde(default = "default_true")]
    pub close_on_expiry: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

/// Where a client may put its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN`.
    Header,
    /// `?access_token=TOKEN` (`query_param`).
    Query,
    /// `Cookie: access_token=TOKEN` (`cookie`).
    Cookie,
    /// A `Sec-WebSocket-Protocol` entry `bearer.TOKEN`: what a browser can send.
    Protocol,
}

/// What a required claim must be.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClaimRule {
    /// `{ contains = "feed:read" }` or a list: each is an element of the claim (an array, or a
    /// space-separated string as OAuth's `scope`).
    Contains {
        #[serde(deserialize_with = "one_or_many")]
        contains: Vec<String>,
    },
    /// One of these values.
    OneOf(Vec<ClaimValue>),
    /// This value.
    Is(ClaimValue),
}

/// A claim value a rule names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClaimValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

/// `[server.tls]`'s client certificates: whether the listener asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Asked for, verified when sent, not needed for the TLS handshake.
    #[default]
    Optional,
    /// The TLS handshake fails without one.
    Required,
}

fn default_refresh() -> u64 {
    300_000
}
fn default_refetch() -> u64 {
    10_000
}
fn default_leeway() -> u64 {
    30
}
fn default_sources() -> Vec<TokenSource> {
    vec![TokenSource::Header]
}
fn default_token_name() -> String {
    "access_token".into()
}
fn default_true() -> bool {
    true
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl JwtConfig {
    /// What serde cannot check: (the key under `jwt`, what was expected).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.algorithms.is_empty() {
            return Err((
                "algorithms",
                "expected at least one of HS256, RS256, ES256, EdDSA".into(),
            ));
        }
        let hmac = self.algorithms.contains(&JwtAlgorithm::HS256);
        if hmac && self.algorithms.len() > 1 {
            // A public key must never be usable as an HMAC secret (algorithm confusion).
            return Err(("algorithms", "HS256 cannot be mixed with public-key algorithms".into()));
        }
        let sources = [
            self.key_file.is_some(),
            self.secret_file.is_some(),
            self.jwks_url.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err((
                "key_file",
                "expected exactly one of key_file, secret_file, jwks_url".into(),
            ));
        }
        if hmac != self.secret_file.is_some() {
            return Err((
                "secret_file",
                "HS256 takes its secret from secret_file, and only HS256 does".into(),
            ));
        }
        if let Some(url) = &self.jwks_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(("jwks_url", format!("expected an http:// or https:// URL, got {url:?}")));
        }
        if self.jwks_refresh_ms == 0 {
            return Err(("jwks_refresh_ms", "expected at least 1".into()));
        }
        if self.tokens.is_empty() {
            return Err((
                "tokens",
                "expected at least one of header, query, cookie, protocol".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(text: &str) -> Result<JwtConfig, String> {
        let config: JwtConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check().map_err(|(key, message)| format!("{key}: {message}"))?;
        Ok(config)
    }

    #[test]
    fn claim_rules_read_as_written() {
        let config = jwt(concat!(
            "algorithms = [\"RS256\"]\njwks_url = \"https://id.example/jwks\"\naudience = \"feed\"\n",
            "[claims]\ntenant = \"acme\"\nrole = [\"admin\", \"ops\"]\nlevel = 3\n",
            "scope = { contains = \"feed:read\" }\n",
        ))
        .unwrap();
        assert_eq!(config.audience, ["feed"]);
        assert_eq!(config.claims["tenant"], ClaimRule::Is(ClaimValue::Text("acme".into())));
        assert_eq!(config.claims["level"], ClaimRule::Is(ClaimValue::Integer(3)));
        assert!(matches!(&config.claims["role"], ClaimRule::OneOf(values) if values.len() == 2));
        assert_eq!(
            config.claims["scope"],
            ClaimRule::Contains {
                contains: vec!["feed:read".into()]
            }
        );
        assert_eq!(config.tokens, [TokenSource::Header]);
        assert!(config.close_on_expiry);
    }

    #[test]
    fn key_sources_must_fit_the_algorithms() {
        let e = jwt("algorithms = [\"HS256\"]\nkey_file = \"k.pem\"\n").unwrap_err();
        assert!(e.starts_with("secret_file:"), "{e}");
        let e = jwt("algorithms = [\"HS256\", \"RS256\"]\nsecret_file = \"s\"\n").unwrap_err();
        assert!(e.contains("cannot be mixed"), "{e}");
        let e = jwt("algorithms = [\"RS256\"]\nkey_file = \"k.pem\"\njwks_url = \"http://x\"\n").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = jwt("algorithms = []\nkey_file = \"k.pem\"\n").unwrap_err();
        assert!(e.starts_with("algorithms:"), "{e}");
    }
}
