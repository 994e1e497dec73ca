//! The keys a route verifies tokens with: from a PEM file, a JWKS file, an HS256 secret file, or
//! a JWKS URL fetched at start, refreshed on an interval and when a token names a key the set
//! lacks (at most every `jwks_refetch_min_ms`), so a rotation is picked up without a restart.
//! A failed fetch keeps the last good set.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{JwtAlgorithm, JwtConfig};
use crate::connectors::url::redact;
use crate::connectors::ws::{TlsOptions, client_config};

/// The largest JWKS document read.
const MAX_JWKS: usize = 1 << 20;
/// One fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("no public key of {0:?} in the PEM")]
    Pem(Vec<JwtAlgorithm>),
    #[error("not a JWKS: {0}")]
    Jwks(serde_json::Error),
    #[error("the JWKS has no key usable with {0:?}")]
    NoUsableKey(Vec<JwtAlgorithm>),
    #[error("the secret is empty")]
    EmptySecret,
    #[error("jwks_url: {0}")]
    Url(String),
    #[error("jwks_ca: {0}")]
    Tls(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body: {0}")]
    Body(String),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Keys(#[from] KeyError),
}

pub fn algorithm(configured: JwtAlgorithm) -> Algorithm {
    match configured {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

struct Key {
    /// `kid`: a key that has one verifies only tokens that name it or no key at all.
    id: Option<String>,
    /// The JWK's `alg`, when it says.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// One version of a route's keys.
#[derive(Default)]
pub struct KeySet(Vec<Key>);

impl KeySet {
    /// A secret, a PEM public key or a JWKS, as the file's contents show.
    fn from_file(config: &JwtConfig, bytes: &[u8]) -> Result<KeySet, KeyError> {
        if config.secret_file.is_some() {
            let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
            if secret.is_empty() {
                return Err(KeyError::EmptySecret);
            }
            let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::EmptySecret)?;
            return Ok(KeySet(vec![Key {
                id: None,
                algorithm: None,
                key,
            }]));
        }
        if bytes.trim_ascii_start().starts_with(b"{") {
            return Self::from_jwks(config, bytes);
        }
        let key = config
            .algorithms
            .iter()
            .find_map(|alg| match alg {
                JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(bytes).ok(),
                JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(bytes).ok(),
                JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(bytes).ok(),
                JwtAlgorithm::HS256 => None,
            })
            .ok_or_else(|| KeyError::Pem(config.algorithms.clone()))?;
        Ok(KeySet(vec![Key {
            id: None,
            algorithm: None,
            key,
        }]))
    }

    /// The keys of a JWKS usable with the route's algorithms; others (encryption keys, other
    /// curves) are passed over.
    fn from_jwks(config: &JwtConfig, bytes: &[u8]) -> Result<KeySet, KeyError> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(KeyError::Jwks)?;
        let allowed: Vec<Algorithm> = config.algorithms.iter().copied().map(algorithm).collect();
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                let algorithm = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok());
                let usable = allowed
                    .iter()
                    .any(|a| a.family() == key.family() && algorithm.is_none_or(|k| k == *a));
                usable.then(|| Key {
                    id: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey(config.algorithms.clone()));
        }
        Ok(KeySet(keys))
    }

    pub fn has_id(&self, id: &str) -> bool {
        self.0.iter().any(|k| k.id.as_deref() == Some(id))
    }

    /// The keys that may have signed a token with this header.
    pub fn candidates(&self, id: Option<&str>, alg: Algorithm) -> impl Iterator<Item = &DecodingKey> {
        self.0
            .iter()
            .filter(move |k| {
                k.key.family() == alg.family()
                    && k.algorithm.is_none_or(|a| a == alg)
                    && (id.is_none() || k.id.is_none() || k.id.as_deref() == id)
            })
            .map(|k| &k.key)
    }
}

/// A route's keys: the current set, and where a new one comes from.
pub struct Keys {
    current: ArcSwap<KeySet>,
    remote: Option<Remote>,
}

struct Remote {
    url: Uri,
    tls: Option<tokio_rustls::TlsConnector>,
    refresh: Duration,
    refetch_min: Duration,
    /// When the set was last fetched (or tried); held while a fetch runs, so a burst of tokens
    /// naming a new key makes one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    route: Arc<str>,
}

impl Keys {
    /// Reads the key file now; a JWKS URL is fetched by a task started here when a runtime
    /// runs (`framegate check` has none: it only checks the URL).
    pub fn load(route: &str, config: &JwtConfig) -> Result<Arc<Keys>, KeyError> {
        let file = config.key_file.as_ref().or(config.secret_file.as_ref());
        let (current, remote) = match (file, &config.jwks_url) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).map_err(|e| KeyError::Read(path.display().to_string(), e))?;
                (KeySet::from_file(config, &bytes)?, None)
            }
            (None, Some(url)) => (KeySet::default(), Some(Remote::new(route, config, url)?)),
            (None, None) => unreachable!("the config check asks for a key source"),
        };
        let keys = Arc::new(Keys {
            current: ArcSwap::from_pointee(current),
            remote,
        });
        if let (Some(remote), Ok(runtime)) = (&keys.remote, tokio::runtime::Handle::try_current()) {
            let refresh = remote.refresh;
            runtime.spawn(refresh_every(Arc::downgrade(&keys), refresh, config.clone()));
        }
        Ok(keys)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Fetches the set again for a token naming a key it lacks, unless it was fetched less
    /// than `jwks_refetch_min_ms` ago; a file's set never changes.
    pub async fn refetch_for_unknown(&self, config: &JwtConfig) {
        if let Some(remote) = &self.remote {
            self.fetch(remote, config, remote.refetch_min).await;
        }
    }

    async fn fetch(&self, remote: &Remote, config: &JwtConfig, unless_within: Duration) {
        let mut last = remote.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < unless_within) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, remote.get())
            .await
            .unwrap_or(Err(FetchError::Timeout))
            .and_then(|body| KeySet::from_jwks(config, &body).map_err(FetchError::from));
        match fetched {
            Ok(set) => {
                tracing::debug!(route = %remote.route, keys = set.0.len(), "JWKS fetched");
                self.current.store(Arc::new(set));
            }
            // The last good set stays.
            Err(e) => tracing::warn!(
                route = %remote.route,
                url = %redact(&remote.url.to_string()),
                "JWKS fetch failed: {e}"
            ),
        }
    }
}

/// Fetches the set at once, then every `refresh`, for as long as the route's keys live.
async fn refresh_every(keys: Weak<Keys>, refresh: Duration, config: JwtConfig) {
    loop {
        {
            let Some(keys) = keys.upgrade() else { return };
            let remote = keys.remote.as_ref().expect("only remote keys are refreshed");
            keys.fetch(remote, &config, Duration::ZERO).await;
        }
        tokio::time::sleep(refresh).await;
    }
}

impl Remote {
    fn new(route: &str, config: &JwtConfig, url: &str) -> Result<Remote, KeyError> {
        let url: Uri = url
            .parse()
            .map_err(|e| KeyError::Url(format!("{:?}: {e}", redact(url))))?;
        if url.host().is_none() {
            return Err(KeyError::Url(format!("{} has no host", redact(&url.to_string()))));
        }
        let tls = match url.scheme_str() {
            Some("https") => {
                let options = TlsOptions {
                    ca: config.jwks_ca.clone(),
                    ..TlsOptions::default()
                };
                Some(tokio_rustls::TlsConnector::from(
                    client_config(&options).map_err(KeyError::Tls)?,
                ))
            }
            _ => None,
        };
        Ok(Remote {
            url,
            tls,
            refresh: Duration::from_millis(config.jwks_refresh_ms),
            refetch_min: Duration::from_millis(config.jwks_refetch_min_ms),
            last_fetch: tokio::sync::Mutex::new(None),
            route: route.into(),
        })
    }

    /// One GET of the URL on a connection of its own: fetches are rare.
    async fn get(&self) -> Result<Bytes, FetchError> {
        let host = self.url.host().expect("checked when loaded");
        let port = self.url.port_u16().unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(FetchError::Connect)?;
        match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| FetchError::Tls(std::io::Error::other(e)))?;
                let stream = connector.connect(name, tcp).await.map_err(FetchError::Tls)?;
                self.get_over(stream).await
            }
            None => self.get_over(tcp).await,
        }
    }

    async fn get_over<S>(&self, stream: S) -> Result<Bytes, FetchError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let authority = self.url.authority().expect("a URL with a host").as_str();
        let request = http::Request::get(self.url.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS)
            .collect()
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?;
        Ok(body.to_bytes())
    }
}
