//! The `http` sink against a real HTTP server (hyper, in the test) that records every request:
//! method, path from the URL template, header templates, the key header, the record's headers,
//! the content type, the body and the order; a 2xx result carries the status and `location`,
//! a 500 is retried and then fails, a 4xx fails at once, a server that is not there is retried.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use futures_util::SinkExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// `/ingest/..` answers 201 with a location, `/fail/..` 500, `/bad/..` 404.
async fn answer(request: Request<Incoming>, log: Log) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let count = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers,
            body,
        });
        log.len()
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"nope\n")));
    if path.starts_with("/ingest/") {
        *response.status_mut() = StatusCode::CREATED;
        response
            .headers_mut()
            .insert("location", format!("/items/{count}").parse().unwrap());
    } else if path.starts_with("/fail/") {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

/// The server's port, its request log and its count of accepted connections.
async fn server() -> (u16, Log, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    let served = log.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let log = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| answer(request, log.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, log, connections)
}

/// The config, with sink `away` on a port where nothing listens.
fn config(port: u16) -> String {
    let away = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!(
        r#"{head}
[sinks.web]
type = "http"
url = "http://127.0.0.1:{port}/ingest/{{meta.path.tenant}}"
headers = {{ "x-tenant" = "{{meta.query.t}}" }}

[sinks.broken]
type = "http"
url = "http://127.0.0.1:{port}/fail/{{meta.path.tenant}}"
max_retries = 2
retry_backoff_ms = 10

[sinks.refusing]
type = "http"
url = "http://127.0.0.1:{port}/bad/{{meta.path.tenant}}"
method = "PUT"
content_type = "application/json"
max_retries = 3
retry_backoff_ms = 10

[sinks.away]
type = "http"
url = "http://127.0.0.1:{away}/x"
max_retries = 1
retry_backoff_ms = 10

[routes.in]
path = "/in/{{tenant}}"
sinks = ["web"]

[routes.probe]
path = "/probe/{{tenant}}"
filters = [{{ module = "probe" }}]
sinks = ["web", "broken", "refusing", "away"]
"#,
        head = head("")
    )
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().unwrap())
}

async fn emit(ws: &mut Ws, sink: &str, payload: &str) -> String {
    send_text(ws, &format!("emit {sink} {payload}")).await;
    let ticket = next_text(ws).await.replace("ok ", "");
    let result = next_text(ws).await;
    result
        .strip_prefix(&format!("result {ticket} "))
        .and_then(|r| r.strip_suffix(&format!(" ctx:{payload}")))
        .unwrap_or_else(|| panic!("{result}"))
        .to_string()
}

#[tokio::test]
async fn every_record_is_a_request_in_order_with_its_headers() {
    let (port, log, connections) = server().await;
    let proxy = Proxy::start(&config(port), &["probe"], &[]);
    let mut ws = proxy.connect("/in/acme?t=T1").await;
    let sent: Vec<String> = (0..20).map(|i| format!("{{\"n\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }
    ws.send(Message::binary(vec![0u8, 255, 1])).await.unwrap();
    eventually("the server has every record", || async {
        log.lock().unwrap().len() == 21
    })
    .await;

    let seen = log.lock().unwrap().clone();
    for (request, expected) in seen.iter().zip(&sent) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/ingest/acme");
        assert_eq!(header(request, "x-tenant"), Some("T1"));
        assert_eq!(header(request, "content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(header(request, "x-framegate-key"), None);
        assert_eq!(request.body, expected.as_bytes());
    }
    assert_eq!(header(&seen[20], "content-type"), Some("application/octet-stream"));
    assert_eq!(seen[20].body, [0u8, 255, 1].as_slice());
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one kept-alive connection");

    // A confirmed result carries the status and the location; key and headers travel.
    let mut probe = proxy.connect("/probe/acme?t=T2").await;
    assert_eq!(emit(&mut probe, "web", "hello").await, "ok 201 /items/22");
    let last = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(header(&last, "x-framegate-key"), Some("k"));
    assert_eq!(header(&last, "h"), Some("v"));
    assert_eq!(header(&last, "x-tenant"), Some("T2"));
    assert_eq!(last.body, "hello".as_bytes());
}

#[tokio::test]
async fn a_500_is_retried_and_a_4xx_is_final() {
    let (port, log, _) = server().await;
    let proxy = Proxy::start(&config(port), &["probe"], &[]);
    let mut probe = proxy.connect("/probe/acme?t=T").await;
    let count = |prefix: &str| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    };

    let failed = emit(&mut probe, "broken", "x").await;
    assert!(
        failed.starts_with("failed http POST http://127.0.0.1:")
            && failed.ends_with("/fail/acme: 500 Internal Server Error nope"),
        "{failed}"
    );
    assert_eq!(count("/fail/"), 3, "one try and max_retries = 2 more");

    let refused = emit(&mut probe, "refusing", "{}").await;
    assert!(refused.starts_with("failed refused: http PUT"), "{refused}");
    assert!(refused.ends_with("/bad/acme: 404 Not Found nope"), "{refused}");
    assert_eq!(count("/bad/"), 1, "a 4xx is not retried");
    let bad = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (bad.method.as_str(), header(&bad, "content-type")),
        ("PUT", Some("application/json"))
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"broken\",outcome=\"retried\"}")
            .await,
        2.0
    );

    // No server: retried, failed with the cause, and the sink's peer shows down.
    let unreachable = emit(&mut probe, "away", "z").await;
    assert!(
        unreachable.starts_with("failed http POST http://127.0.0.1:"),
        "{unreachable}"
    );
    assert!(unreachable.contains("Connection refused"), "{unreachable}");
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"away\",outcome=\"retried\"}")
            .await,
        1.0
    );
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.away\"}").await, 0.0);
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.broken\"}").await, 1.0);
}
