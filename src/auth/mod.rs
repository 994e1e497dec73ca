//! Authentication at the upgrade: who may open a connection on a route. A JWT (HS256, RS256,
//! ES256, EdDSA; keys from a file or a JWKS URL) taken from where the route says, its time,
//! issuer, audience and required claims checked; or a client certificate the listener verified
//! (mTLS). What it proves becomes read-only metadata (`claim.*`, `tls.*`); a refusal is a 401
//! or 403 with a short reason, before any filter runs. The token itself is taken out of the
//! request and never logged.

mod cert;
mod claims;
mod keys;
mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};
use tokio::time::Instant;

pub use cert::ClientCert;
pub use keys::KeyError;
pub use token::PROTOCOL_PREFIX;

use crate::config::{AuthConfig, ClientCertRule, JwtConfig};
use crate::metrics::{AuthMetrics, Metrics};
use keys::{Keys, algorithm};

/// Why a connection was refused; each is a label of `framegate_auth_refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    Malformed,
    Algorithm,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    Audience,
    Issuer,
    Claim,
    ClientCert,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Algorithm => "algorithm",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Audience => "audience",
            Reason::Issuer => "issuer",
            Reason::Claim => "claim",
            Reason::ClientCert => "client_cert",
        }
    }

    /// What the client reads: short, and nothing of the token.
    fn text(self) -> &'static str {
        match self {
            Reason::Missing => "token required",
            Reason::Malformed => "malformed token",
            Reason::Algorithm => "token algorithm not allowed",
            Reason::UnknownKey => "token signed by an unknown key",
            Reason::BadSignature => "bad token signature",
            Reason::Expired => "token expired",
            Reason::NotYetValid => "token not yet valid",
            Reason::Audience => "wrong token audience",
            Reason::Issuer => "wrong token issuer",
            Reason::Claim => "token claim not allowed",
            Reason::ClientCert => "client certificate required",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::Claim | Reason::ClientCert => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn of(error: &ErrorKind) -> Reason {
        match error {
            ErrorKind::InvalidSignature => Reason::BadSignature,
            ErrorKind::ExpiredSignature => Reason::Expired,
            ErrorKind::ImmatureSignature => Reason::NotYetValid,
            ErrorKind::InvalidAudience => Reason::Audience,
            ErrorKind::InvalidIssuer => Reason::Issuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Reason::Audience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Reason::Issuer,
            ErrorKind::InvalidAlgorithm => Reason::Algorithm,
            _ => Reason::Malformed,
        }
    }
}

/// A refused upgrade: the answer, and the reason for the metric.
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// The required claim that did not match.
    claim: Option<String>,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        self.reason.status().as_u16()
    }

    /// The 401 or 403, with `WWW-Authenticate: Bearer` (RFC 6750) for a token's problems.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let text = match &self.claim {
            Some(claim) => format!("{} ({claim})", self.reason.text()),
            None => self.reason.text().to_string(),
        };
        let challenge = match self.reason {
            Reason::ClientCert => None,
            Reason::Missing => Some("Bearer realm=\"framegate\"".to_string()),
            Reason::Claim => Some(format!(
                "Bearer realm=\"framegate\", error=\"insufficient_scope\", error_description=\"{text}\""
            )),
            _ => Some(format!(
                "Bearer realm=\"framegate\", error=\"invalid_token\", error_description=\"{text}\""
            )),
        };
        let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
        *response.status_mut() = self.reason.status();
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// What a connection proved at the upgrade.
#[derive(Debug, Default)]
pub struct Identity {
    /// `claim.*` and `tls.*`, for the connection's metadata.
    pub meta: Vec<(String, Bytes)>,
    /// When the token stops being valid, if the connection is to be closed then.
    pub expires: Option<Instant>,
    /// The sub-protocol the 101 names when the token came as a protocol entry.
    pub protocol: Option<HeaderValue>,
}

/// A route's authentication, built with the route and kept with it across reloads.
pub struct Auth {
    jwt: Option<Jwt>,
    client_cert: Option<ClientCertRule>,
    metrics: AuthMetrics,
}

struct Jwt {
    config: JwtConfig,
    keys: Arc<Keys>,
    /// One per allowed algorithm: jsonwebtoken wants every algorithm of a validation to be of
    /// the key's family.
    validations: Vec<Validation>,
}

impl Auth {
    pub fn build(route: &str, config: &AuthConfig, metrics: &Metrics) -> Result<Auth, KeyError> {
        let jwt = match &config.jwt {
            Some(jwt) => Some(Jwt {
                keys: Keys::load(route, jwt)?,
                validations: jwt
                    .algorithms
                    .iter()
                    .map(|alg| validation(jwt, algorithm(*alg)))
                    .collect(),
                config: jwt.clone(),
            }),
            None => None,
        };
        Ok(Auth {
            jwt,
            client_cert: config.client_cert,
            metrics: metrics.auth(route),
        })
    }

    /// Checks an upgrade request: its client certificate (which the listener put in its
    /// extensions) and its token, which is taken out of the request whatever the outcome.
    pub async fn admit<B>(&self, request: &mut Request<B>) -> Result<Identity, Refusal> {
        let cert = request.extensions().get::<Arc<ClientCert>>().cloned();
        let mut identity = Identity {
            meta: cert.as_ref().map(|c| c.meta.clone()).unwrap_or_default(),
            ..Identity::default()
        };
        let taken = self.jwt.as_ref().map(|jwt| token::take(request, &jwt.config));
        match (self.client_cert, &cert) {
            (Some(ClientCertRule::Required), None) => return Err(self.refuse(Reason::ClientCert, None)),
            (Some(ClientCertRule::Sufficient), Some(_)) => {
                identity.protocol = taken.and_then(|t| t.protocol);
                return Ok(identity);
            }
            _ => {}
        }
        let (Some(jwt), Some(taken)) = (&self.jwt, taken) else {
            return Ok(identity);
        };
        identity.protocol = taken.protocol;
        let token = taken.token.ok_or_else(|| self.refuse(Reason::Missing, None))?;
        let claims = jwt.verify(&token).await.map_err(|reason| self.refuse(reason, None))?;
        if let Some(claim) = claims::unmet(&jwt.config.claims, &claims) {
            return Err(self.refuse(Reason::Claim, Some(printable(claim))));
        }
        identity.meta.extend(claims::to_meta(&claims));
        if jwt.config.close_on_expiry {
            identity.expires = claims
                .get("exp")
                .and_then(Value::as_u64)
                .map(|exp| deadline(exp + jwt.config.leeway_s));
        }
        Ok(identity)
    }

    /// Counts a connection closed because its token expired.
    pub fn expired_while_connected(&self) {
        self.metrics.refused("expired_while_connected");
    }

    fn refuse(&self, reason: Reason, claim: Option<String>) -> Refusal {
        self.metrics.refused(reason.label());
        Refusal { reason, claim }
    }
}

impl Jwt {
    async fn verify(&self, token: &str) -> Result<Map<String, Value>, Reason> {
        let header = decode_header(token).map_err(|_| Reason::Malformed)?;
        let validation = self
            .validations
            .iter()
            .find(|v| v.algorithms == [header.alg])
            .ok_or(Reason::Algorithm)?;
        let id = header.kid.as_deref();
        let mut keys = self.keys.current();
        if id.is_some_and(|id| !keys.has_id(id)) || keys.candidates(id, header.alg).next().is_none() {
            self.keys.refetch_for_unknown(&self.config).await;
            keys = self.keys.current();
        }
        let mut refused = Reason::UnknownKey;
        for key in keys.candidates(id, header.alg) {
            match decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                // Another key of the set may have signed it.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => refused = Reason::BadSignature,
                Err(e) => return Err(Reason::of(e.kind())),
            }
        }
        Err(refused)
    }
}

fn validation(config: &JwtConfig, alg: jsonwebtoken::Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = config.leeway_s;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if config.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&config.audience);
        required.push("aud");
    }
    if !config.issuer.is_empty() {
        validation.set_issuer(&config.issuer);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The instant a Unix time (seconds) falls at.
fn deadline(unix: u64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Instant::now() + Duration::from_secs(unix).saturating_sub(now)
}

/// A claim name as it may stand in a header's quoted string.
fn printable(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};

    use super::*;

    fn auth(dir: &std::path::Path, extra: &str) -> Auth {
        std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
        let text = format!(
            "[jwt]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\naudience = \"feed\"\nissuer = \"id\"\nleeway_s = 0\n{extra}",
            dir.join("secret").display()
        );
        let config: AuthConfig = toml::from_str(&text).unwrap();
        Auth::build("r", &config, &Metrics::default()).unwrap()
    }

    fn token(claims: Value, secret: &[u8]) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    async fn admit(auth: &Auth, token: Option<String>) -> Result<Identity, Reason> {
        let mut builder = Request::builder().uri("/");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let mut request = builder.body(()).unwrap();
        let admitted = auth.admit(&mut request).await.map_err(|r| r.reason);
        assert!(
            request.headers().get("authorization").is_none(),
            "the token stays behind"
        );
        admitted
    }

    #[tokio::test]
    async fn each_fault_has_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let auth = auth(dir.path(), "[jwt.claims]\nrole = [\"a\", \"b\"]\n");
        let good = serde_json::json!({"sub": "u", "aud": "feed", "iss": "id", "exp": now() + 60, "role": "a"});
        let with = |change: Value| {
            let mut claims = good.clone();
            claims
                .as_object_mut()
                .unwrap()
                .extend(change.as_object().unwrap().clone());
            token(claims, b"s3cret")
        };
        let identity = admit(&auth, Some(with(serde_json::json!({})))).await.unwrap();
        assert!(identity.meta.contains(&("claim.sub".into(), Bytes::from("u"))));
        assert!(identity.expires.is_some());
        assert_eq!(admit(&auth, None).await.unwrap_err(), Reason::Missing);
        assert_eq!(admit(&auth, Some("x.y".into())).await.unwrap_err(), Reason::Malformed);
        assert_eq!(
            admit(&auth, Some(token(good.clone(), b"other"))).await.unwrap_err(),
            Reason::BadSignature
        );
        let expired = with(serde_json::json!({"exp": now() - 10}));
        assert_eq!(admit(&auth, Some(expired)).await.unwrap_err(), Reason::Expired);
        let early = with(serde_json::json!({"nbf": now() + 60}));
        assert_eq!(admit(&auth, Some(early)).await.unwrap_err(), Reason::NotYetValid);
        let audience = with(serde_json::json!({"aud": "other"}));
        assert_eq!(admit(&auth, Some(audience)).await.unwrap_err(), Reason::Audience);
        let issuer = with(serde_json::json!({"iss": "other"}));
        assert_eq!(admit(&auth, Some(issuer)).await.unwrap_err(), Reason::Issuer);
        let role = with(serde_json::json!({"role": "c"}));
        assert_eq!(admit(&auth, Some(role)).await.unwrap_err(), Reason::Claim);
    }

    #[test]
    fn refusals_answer_with_a_bearer_challenge() {
        let expired = Refusal {
            reason: Reason::Expired,
            claim: None,
        }
        .into_response();
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        let challenge = expired.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let claim = Refusal {
            reason: Reason::Claim,
            claim: Some("role".into()),
        }
        .into_response();
        assert_eq!(claim.status(), StatusCode::FORBIDDEN);
    }
}
