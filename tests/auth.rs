//! Authentication at the upgrade, with real clients and tokens minted here: HS256 from a secret
//! file and EdDSA from a PEM file, each fault refused with its status and reason before any
//! filter runs; the four token sources; claims as read-only metadata for filters and sink
//! templates; a token expiring while connected; RS256 and ES256 from a JWKS URL served here,
//! rotated during the test; client certificates (mTLS) from a CA made by rcgen.
//! tests/keys/rsa-test-only.pem is an RSA key made for these tests only (ring cannot make one).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

const SECRET: &[u8] = b"a secret for tests only";
const RSA_KEY: &[u8] = include_bytes!("keys/rsa-test-only.pem");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    encode(&Header::default(), claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    encode(&header, claims, key).unwrap()
}

/// Claims that pass the `/feed` route, with `change` laid over them.
fn feed_claims(change: Value) -> Value {
    let mut claims = json!({
        "sub": "user-1", "tenant": "acme", "aud": "feed", "iss": "https://id.test",
        "exp": now() + 600, "scope": "feed:read feed:write", "level": 3,
    });
    for (name, value) in change.as_object().unwrap() {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            _ => claims.as_object_mut().unwrap().insert(name.clone(), value.clone()),
        };
    }
    claims
}

async fn connect_with(request: Request) -> Ws {
    let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect: {e}"));
    ws
}

fn hs_config(extra_routes: &str) -> String {
    format!(
        r#"{head}
[sinks.out]
type = "file"
path = "out.jsonl"
fsync = "always"
key = "{{meta.claim.sub}}"
headers = {{ tenant = "{{meta.claim.tenant}}" }}

[routes.feed]
path = "/feed"
filters = [{{ module = "probe" }}]
sinks = ["out"]

[routes.feed.auth.jwt]
algorithms = ["HS256"]
secret_file = "secret"
issuer = "https://id.test"
audience = ["feed", "other-app"]
leeway_s = 0
tokens = ["header", "query", "cookie", "protocol"]

[routes.feed.auth.jwt.claims]
tenant = "acme"
scope = {{ contains = "feed:read" }}
level = [2, 3]

[routes.lenient]
path = "/lenient"
filters = [{{ module = "probe" }}]

[routes.lenient.auth.jwt]
algorithms = ["HS256"]
secret_file = "secret"
leeway_s = 0
close_on_expiry = false
{extra_routes}"#,
        head = head("")
    )
}

fn start_hs(extra_routes: &str, extra_files: &[(&str, &[u8])]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), [SECRET, b"\n"].concat()).unwrap();
    for (name, bytes) in extra_files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    std::fs::copy(
        built_filters().join("probe.wasm"),
        dir.path().join("filters/probe.wasm"),
    )
    .expect("target/filters/probe.wasm: run scripts/build-filters");
    std::fs::write(dir.path().join("framegate.toml"), hs_config(extra_routes)).unwrap();
    Proxy::spawn(dir, &["run", "framegate.toml"])
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason() {
    let proxy = start_hs("", &[]);
    let refused = |change: Value, secret: &'static [u8]| {
        let token = hs256(&feed_claims(change), secret);
        async move { upgrade_with(proxy.ws, "/feed", &format!("Authorization: Bearer {token}\r\n")).await }
    };
    let cases = [
        (json!({"exp": now() - 5}), SECRET, 401, "token expired", "expired"),
        (
            json!({"nbf": now() + 600}),
            SECRET,
            401,
            "token not yet valid",
            "not_yet_valid",
        ),
        (
            json!({}),
            b"another secret".as_slice(),
            401,
            "bad token signature",
            "bad_signature",
        ),
        (
            json!({"aud": "someone-else"}),
            SECRET,
            401,
            "wrong token audience",
            "audience",
        ),
        (
            json!({"iss": "https://evil.test"}),
            SECRET,
            401,
            "wrong token issuer",
            "issuer",
        ),
        (
            json!({"tenant": null}),
            SECRET,
            403,
            "token claim not allowed (tenant)",
            "claim",
        ),
        (
            json!({"scope": "feed:write"}),
            SECRET,
            403,
            "token claim not allowed (scope)",
            "claim",
        ),
        (
            json!({"level": 9}),
            SECRET,
            403,
            "token claim not allowed (level)",
            "claim",
        ),
    ];
    for (change, secret, status, reason, _) in &cases {
        let (got, head, body) = refused(change.clone(), secret).await;
        assert_eq!((got, body.trim()), (*status, *reason), "{change}");
        assert!(head.contains("www-authenticate: bearer realm=\"framegate\""), "{head}");
    }
    let (status, head, body) = upgrade_with(proxy.ws, "/feed", "").await;
    assert_eq!((status, body.trim()), (401, "token required"));
    assert!(head.contains("www-authenticate: bearer realm=\"framegate\""), "{head}");
    assert!(
        !head.contains("error="),
        "no error code when no token came (RFC 6750): {head}"
    );
    let (status, _, body) = upgrade_with(proxy.ws, "/feed", "Authorization: Bearer not.a.token\r\n").await;
    assert_eq!((status, body.trim()), (401, "malformed token"));

    let metric = |reason: &str| format!("framegate_auth_refused_total{{route=\"feed\",reason=\"{reason}\"}}");
    assert_eq!(proxy.metric(&metric("claim")).await, 3.0);
    for (_, _, _, _, reason) in &cases[..5] {
        assert_eq!(proxy.metric(&metric(reason)).await, 1.0, "{reason}");
    }
    assert_eq!(proxy.metric(&metric("missing")).await, 1.0);
    assert_eq!(
        proxy
            .metric("framegate_upgrades_refused_total{route=\"feed\",status=\"401\"}")
            .await,
        7.0
    );
    // No token reaches the logs, refused or not.
    let token = hs256(&feed_claims(json!({"exp": now() - 5})), SECRET);
    let (_, _, _) = upgrade_with(proxy.ws, "/feed", &format!("Authorization: Bearer {token}\r\n")).await;
    let signature = token.rsplit('.').next().unwrap();
    assert!(!proxy.logs().contains(signature));
}

#[tokio::test]
async fn claims_are_read_only_metadata_for_filters_and_sinks() {
    let proxy = start_hs("", &[]);
    let token = hs256(&feed_claims(json!({})), SECRET);
    let mut request = proxy.url("/feed?room=1").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    // A client cannot bring claims of its own: headers and query keys have their own prefixes.
    request.headers_mut().insert("claim.tenant", "forged".parse().unwrap());
    let mut ws = connect_with(request).await;
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "user-1");
    assert_eq!(ask(&mut ws, "meta claim.tenant").await, "acme");
    assert_eq!(ask(&mut ws, "meta claim.level").await, "3");
    assert_eq!(ask(&mut ws, "meta claim.aud").await, "feed");
    assert_eq!(ask(&mut ws, "meta header.claim.tenant").await, "forged");
    // The token itself is in no metadata.
    assert_eq!(ask(&mut ws, "meta header.authorization").await, "<none>");
    // A filter cannot set or remove a claim (ERR_NOT_ALLOWED), and the claim stays.
    assert!(ask(&mut ws, "set claim.tenant evil").await.starts_with("err"));
    assert!(ask(&mut ws, "set claim.new x").await.starts_with("err"));
    assert!(ask(&mut ws, "del claim.tenant").await.starts_with("err"));
    assert!(ask(&mut ws, "set tls.subject CN=me").await.starts_with("err"));
    assert_eq!(ask(&mut ws, "meta claim.tenant").await, "acme");
    assert_eq!(ask(&mut ws, "keys claim.new").await, "");

    // The sink's key and header templates read the verified claims.
    send_text(&mut ws, "pass").await;
    let out = proxy.dir.path().join("out.jsonl");
    eventually("the record in out.jsonl", || {
        let out = out.clone();
        async move { std::fs::read_to_string(&out).is_ok_and(|t| !t.is_empty()) }
    })
    .await;
    let line: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["key"], "user-1");
    assert_eq!(line["headers"]["tenant"], "acme");
}

#[tokio::test]
async fn the_token_comes_from_each_configured_place() {
    let proxy = start_hs("", &[]);
    let token = hs256(&feed_claims(json!({})), SECRET);

    let mut ws = connect_with(
        proxy
            .url(&format!("/feed?a=1&access_token={token}"))
            .into_client_request()
            .unwrap(),
    )
    .await;
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "user-1");
    assert_eq!(ask(&mut ws, "meta query").await, "a=1", "the token is out of the query");
    assert_eq!(ask(&mut ws, "meta query.access_token").await, "<none>");

    let mut request = proxy.url("/feed").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("theme=dark; access_token={token}").parse().unwrap());
    let mut ws = connect_with(request).await;
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "user-1");
    assert_eq!(ask(&mut ws, "meta header.cookie").await, "theme=dark");

    // What a browser does: the token as a protocol entry beside the protocol it speaks. The 101
    // names that protocol (tungstenite, like a browser, fails a handshake that names none).
    let mut request = proxy.url("/feed").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("chat.v1, bearer.{token}").parse().unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "user-1");
    assert_eq!(ask(&mut ws, "meta header.sec-websocket-protocol").await, "chat.v1");
    // A protocol entry alone: the 101 does not echo the token back.
    let (status, head, _) = upgrade_with(
        proxy.ws,
        "/feed",
        &format!("Sec-WebSocket-Protocol: bearer.{token}\r\n"),
    )
    .await;
    assert_eq!(status, 101);
    assert!(!head.contains("sec-websocket-protocol"), "{head}");

    // A route that takes the header only does not look in the query.
    let (status, _, _) = upgrade_with(proxy.ws, &format!("/lenient?access_token={token}"), "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_token_expiring_while_connected_closes_with_1008() {
    let ed_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_route = "[routes.ed]\npath = \"/ed\"\nfilters = [{ module = \"probe\" }]\n\
                    [routes.ed.auth.jwt]\nalgorithms = [\"EdDSA\"]\nkey_file = \"ed.pem\"\n";
    let proxy = start_hs(ed_route, &[("ed.pem", ed_key.public_key_pem().as_bytes())]);
    let soon = now() + 2;
    let token = hs256(&feed_claims(json!({"exp": soon})), SECRET);
    let mut request = proxy.url("/feed").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut closing = connect_with(request).await;
    let lenient_token = hs256(&json!({"sub": "l", "exp": soon}), SECRET);
    let mut request = proxy.url("/lenient").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {lenient_token}").parse().unwrap());
    let mut staying = connect_with(request).await;

    assert_eq!(closed_with(&mut closing).await, (1008, "token expired".to_string()));
    assert!(now() >= soon, "closed at its exp, not before");
    // `close_on_expiry = false`: the connection outlives its token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ask(&mut staying, "meta claim.sub").await, "l");
    assert_eq!(
        proxy
            .metric("framegate_auth_refused_total{route=\"feed\",reason=\"expired_while_connected\"}")
            .await,
        1.0
    );

    // EdDSA from a PEM public key file.
    let ed = EncodingKey::from_ed_pem(ed_key.serialize_pem().as_bytes()).unwrap();
    let token = encode(
        &Header::new(Algorithm::EdDSA),
        &json!({"sub": "ed", "exp": now() + 60}),
        &ed,
    )
    .unwrap();
    let mut request = proxy.url("/ed").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut ws = connect_with(request).await;
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "ed");
    // An HS256 token on an EdDSA route is refused, whatever it claims.
    let forged = hs256(&json!({"sub": "ed", "exp": now() + 60}), SECRET);
    let (status, _, body) = upgrade_with(proxy.ws, "/ed", &format!("Authorization: Bearer {forged}\r\n")).await;
    assert_eq!((status, body.trim()), (401, "token algorithm not allowed"));
}

/// A JWKS server: answers every GET with the current document and counts the fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                        head.push(byte[0]);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        JwksServer {
            addr,
            document,
            fetches,
        }
    }

    fn serve(&self, keys: Vec<Jwk>) {
        *self.document.lock().unwrap() = serde_json::to_string(&JwkSet { keys }).unwrap();
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

#[tokio::test]
async fn rs256_and_es256_from_a_jwks_url_rotated_without_restart() {
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    let ec_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec = EncodingKey::from_ec_pem(ec_pair.serialize_pem().as_bytes()).unwrap();
    let jwks = JwksServer::start(String::new()).await;
    jwks.serve(vec![jwk(&rsa, Algorithm::RS256, "old")]);
    let config = format!(
        r#"{head}
[routes.feed]
path = "/feed"
filters = [{{ module = "probe" }}]

[routes.feed.auth.jwt]
algorithms = ["RS256", "ES256"]
jwks_url = "http://{addr}/.well-known/jwks.json"
jwks_refetch_min_ms = 300
audience = "feed"
"#,
        head = head(""),
        addr = jwks.addr
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let claims = json!({"sub": "rs", "aud": "feed", "exp": now() + 600});
    let bearer = |token: String| format!("Authorization: Bearer {token}\r\n");

    let old = signed(Algorithm::RS256, "old", &rsa, &claims);
    let (status, _, body) = upgrade_with(proxy.ws, "/feed", &bearer(old.clone())).await;
    assert_eq!((status, body.as_str()), (101, ""));
    let mut request = proxy.url("/feed").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {old}").parse().unwrap());
    let mut ws = connect_with(request).await;
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "rs");
    // The wrong key under the right kid is a bad signature.
    let (status, _, body) = upgrade_with(
        proxy.ws,
        "/feed",
        &bearer(signed(Algorithm::ES256, "old", &ec, &claims)),
    )
    .await;
    assert_eq!(
        (status, body.trim()),
        (401, "token signed by an unknown key"),
        "an ES256 token finds no ES key under kid old"
    );

    // The issuer rotates: a new EC key, the old RSA key withdrawn. A token naming the new kid
    // makes the proxy fetch the set again (no restart); the old key no longer verifies.
    jwks.serve(vec![jwk(&ec, Algorithm::ES256, "new")]);
    tokio::time::sleep(Duration::from_millis(400)).await; // past jwks_refetch_min_ms
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    let new = signed(
        Algorithm::ES256,
        "new",
        &ec,
        &json!({"sub": "es", "aud": "feed", "exp": now() + 600}),
    );
    let (status, _, body) = upgrade_with(proxy.ws, "/feed", &bearer(new.clone())).await;
    assert_eq!((status, body.as_str()), (101, ""));
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), fetched + 1);
    let (status, _, body) = upgrade_with(proxy.ws, "/feed", &bearer(old.clone())).await;
    assert_eq!((status, body.trim()), (401, "token signed by an unknown key"));

    // Unknown kids refetch at most every jwks_refetch_min_ms, however many tokens name one.
    let fetched = jwks.fetches.load(Ordering::SeqCst);
    for i in 0..10 {
        let token = signed(Algorithm::ES256, &format!("nobody-{i}"), &ec, &claims);
        let (status, _, _) = upgrade_with(proxy.ws, "/feed", &bearer(token)).await;
        assert_eq!(status, 401);
    }
    assert!(jwks.fetches.load(Ordering::SeqCst) <= fetched + 1);

    // A failed fetch keeps the last good set.
    *jwks.document.lock().unwrap() = "not json".into();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let token = signed(Algorithm::ES256, "nobody-again", &ec, &claims);
    let (status, _, _) = upgrade_with(proxy.ws, "/feed", &bearer(token)).await;
    assert_eq!(status, 401);
    let (status, _, _) = upgrade_with(proxy.ws, "/feed", &bearer(new)).await;
    assert_eq!(status, 101, "the last good set still verifies");
    assert!(proxy.logs().contains("JWKS fetch failed"));
    assert_eq!(
        proxy
            .metric("framegate_auth_refused_total{route=\"feed\",reason=\"unknown_key\"}")
            .await,
        13.0
    );
}

#[tokio::test]
async fn a_route_may_require_a_client_certificate() {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();

    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &*ca).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["device-7.test".to_string()]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device-7");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &*ca).unwrap();

    let config = format!(
        "{}\n[routes.secure]\npath = \"/secure\"\nfilters = [{{ module = \"probe\" }}]\nauth = {{ client_cert = \"required\" }}\n\
         [routes.open]\npath = \"/open\"\nfilters = [{{ module = \"probe\" }}]\n\
         [routes.either]\npath = \"/either\"\nfilters = [{{ module = \"probe\" }}]\n\
         [routes.either.auth]\nclient_cert = \"sufficient\"\n\
         [routes.either.auth.jwt]\nalgorithms = [\"HS256\"]\nsecret_file = \"secret\"\n",
        head("tls = { cert = \"cert.pem\", key = \"key.pem\", client_ca = \"ca.pem\" }")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    std::fs::copy(
        built_filters().join("probe.wasm"),
        dir.path().join("filters/probe.wasm"),
    )
    .unwrap();
    std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
    let proxy = Proxy::spawn(dir, &["run", "framegate.toml"]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let builder = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
    };
    let anonymous = Arc::new(builder().with_no_client_auth());
    let with_cert = Arc::new(
        builder()
            .with_client_auth_cert(
                vec![client_cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(client_key.serialize_der()).into(),
            )
            .unwrap(),
    );
    let url = |path: &str| format!("wss://localhost:{}{path}", proxy.ws.port());
    let connect = |path: &str, tls: Arc<rustls::ClientConfig>| {
        tokio_tungstenite::connect_async_tls_with_config(url(path), None, false, Some(Connector::Rustls(tls)))
    };

    // Without a certificate: the handshake passes (client_cert is optional on the listener),
    // the route refuses.
    match connect("/secure", anonymous.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert_eq!(body.trim(), "client certificate required");
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = connect("/open", anonymous.clone()).await.unwrap();
    assert_eq!(ask(&mut ws, "meta tls.subject").await, "<none>");

    let (mut ws, _) = connect("/secure", with_cert.clone()).await.unwrap();
    assert_eq!(ask(&mut ws, "meta tls.subject").await, "CN=device-7");
    assert_eq!(ask(&mut ws, "meta tls.issuer").await, "CN=test CA");
    assert_eq!(ask(&mut ws, "meta tls.san").await, "DNS:device-7.test");
    assert!(ask(&mut ws, "set tls.subject CN=admin").await.starts_with("err"));

    // `client_cert = "sufficient"`: a certificate or a token lets a client in, nothing does not.
    let (mut ws, _) = connect("/either", with_cert).await.unwrap();
    assert_eq!(ask(&mut ws, "meta tls.subject").await, "CN=device-7");
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(connect("/either", anonymous.clone()).await), 401);
    let token = hs256(&json!({"sub": "t", "exp": now() + 60}), SECRET);
    let mut request = url("/either").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tls = Some(Connector::Rustls(anonymous.clone()));
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls)
        .await
        .unwrap();
    assert_eq!(ask(&mut ws, "meta claim.sub").await, "t");
    assert_eq!(
        proxy
            .metric("framegate_auth_refused_total{route=\"secure\",reason=\"client_cert\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_jwks_is_fetched_at_start_and_on_its_interval() {
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    let jwks = JwksServer::start(String::new()).await;
    jwks.serve(vec![jwk(&rsa, Algorithm::RS256, "k")]);
    let config = format!(
        "{}\n[routes.feed]\npath = \"/feed\"\n[routes.feed.auth.jwt]\nalgorithms = [\"RS256\"]\n\
         jwks_url = \"http://{}/jwks\"\njwks_refresh_ms = 200\n",
        head(""),
        jwks.addr
    );
    let proxy = Proxy::start(&config, &[], &[]);
    // No token has come yet: the set was fetched at start, and is fetched again and again.
    eventually("three fetches without a token", || async {
        jwks.fetches.load(Ordering::SeqCst) >= 3
    })
    .await;
    let token = signed(Algorithm::RS256, "k", &rsa, &json!({"sub": "x", "exp": now() + 60}));
    let (status, _, _) = upgrade_with(proxy.ws, "/feed", &format!("Authorization: Bearer {token}\r\n")).await;
    assert_eq!(status, 101);
}
