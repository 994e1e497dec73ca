//! Rolling restarts without loss: under a load of explicit-acked Hydra records going to a slow
//! HTTP server, SIGTERM turns `/readyz` 503 while the listener still accepts, then closes the
//! listener, then closes every client with 1001 once each record it sent was answered; every
//! record that reached the server was answered to its client, every answer was 200, and the
//! proxy exits cleanly. A second SIGTERM ends a drain at once.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 4;
/// Records a client sends before it waits for an answer, as a Hydra client pipelines.
const WINDOW: usize = 16;
/// How long the HTTP server takes per record: records are in flight when SIGTERM comes.
const SERVER_DELAY: Duration = Duration::from_millis(5);

type Stored = Arc<Mutex<Vec<String>>>;

/// A slow HTTP server keeping every body it answered 200 to.
async fn slow_server() -> (u16, Stored) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stored = Stored::default();
    let keep = stored.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let keep = keep.clone();
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        tokio::time::sleep(SERVER_DELAY).await;
                        keep.lock().unwrap().push(String::from_utf8(body.to_vec()).unwrap());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"stored"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, stored)
}

/// What one client saw: the ids answered 200, any other answer, and the close code.
#[derive(Default)]
struct Seen {
    answered: BTreeSet<String>,
    other: Vec<String>,
    close: Option<(u16, String)>,
}

/// Sends `{"c":C,"i":I}` as `-i cC_nI` with at most WINDOW unanswered, until the server closes.
async fn load(mut ws: Ws, client: usize, seen: Arc<Mutex<Seen>>) {
    assert_eq!(
        ask(&mut ws, "-c SET hydra-ack = explicit").await,
        r#"{"status":200,"message":"OK[HYDRA-ACK=explicit]"}"#
    );
    let (mut unanswered, mut next, mut sending) = (0, 0, true);
    loop {
        if sending && unanswered < WINDOW {
            let message = format!("-i c{client}_n{next} {{\"c\":{client},\"i\":{next}}}");
            sending = ws.send(Message::text(message)).await.is_ok();
            if sending {
                unanswered += 1;
                next += 1;
            }
            continue;
        }
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no answer in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                unanswered -= 1;
                let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                let mut seen = seen.lock().unwrap();
                match (answer["requestId"].as_str(), answer["status"]["code"].as_u64()) {
                    (Some(id), Some(200)) => {
                        seen.answered.insert(id.to_string());
                    }
                    _ => seen.other.push(text.to_string()),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                seen.lock().unwrap().close = Some((frame.code.into(), frame.reason.to_string()));
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("client {client}: the connection failed before a close frame: {e}"),
            None => panic!("client {client}: the connection ended without a close frame"),
        }
    }
}

/// When `/readyz` first answered 503, and when the listener first refused a connection.
async fn watch_shutdown(proxy_ws: std::net::SocketAddr, admin: std::net::SocketAddr) -> (Instant, Instant, usize) {
    let (mut unready, mut accepted_while_unready) = (None, 0);
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "the listener never closed");
        if unready.is_none() && http_get(admin, "/readyz").await == (503, "draining: shutting down\n".to_string()) {
            unready = Some(Instant::now());
        }
        match tokio::net::TcpStream::connect(proxy_ws).await {
            Ok(_) if unready.is_some() => accepted_while_unready += 1,
            Ok(_) => {}
            Err(_) => {
                let unready = unready.expect("the listener closed before /readyz turned 503");
                return (unready, Instant::now(), accepted_while_unready);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_under_load_answers_every_record_then_closes_with_1001() {
    let (port, stored) = slow_server().await;
    let config = format!(
        "{}\n[sinks.web]\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/ingest\"\n\n\
         [routes.hydra]\npath = \"/ws-ingest\"\nsinks = [\"web\"]\n\
         filters = [{{ module = \"hydra\", config = {{ ingestors = {{ web_ingestor = {{ sink = \"web\" }} }}, ingest_timeout_ms = 60000 }} }}]\n",
        head("drain_delay_ms = 600\ndrain_period_ms = 200\nclose_spread_ms = 300")
    );
    let mut proxy = Proxy::start(&config, &["hydra"], &[]);
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 200);

    let seen: Vec<Arc<Mutex<Seen>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let mut clients = Vec::new();
    for (client, seen) in seen.iter().enumerate() {
        clients.push(tokio::spawn(load(
            proxy.connect("/ws-ingest").await,
            client,
            seen.clone(),
        )));
    }
    eventually("records answered under load", || async {
        seen.iter().map(|s| s.lock().unwrap().answered.len()).sum::<usize>() >= 200
    })
    .await;

    let watcher = tokio::spawn(watch_shutdown(proxy.ws, proxy.admin));
    let sigterm = Instant::now();
    let exited = tokio::task::spawn_blocking(move || proxy.terminate());
    let (unready, refused, accepted_while_unready) = watcher.await.unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let status = exited.await.unwrap();
    assert!(status.success(), "exit status {status}");

    // /readyz turned 503 first; the listener still took connections for drain_delay_ms.
    assert!(refused > unready);
    assert!(accepted_while_unready > 0, "no connection was accepted while draining");
    assert!(
        refused - sigterm >= Duration::from_millis(550),
        "the listener closed after {:?}",
        refused - sigterm
    );

    let mut answered = BTreeSet::new();
    for (client, seen) in seen.iter().enumerate() {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.close,
            Some((1001, "server shutting down".to_string())),
            "client {client}'s close"
        );
        assert!(
            seen.other.is_empty(),
            "client {client} got answers other than 200: {:?}",
            seen.other
        );
        answered.extend(seen.answered.iter().cloned());
    }
    let stored: BTreeSet<String> = stored
        .lock()
        .unwrap()
        .iter()
        .map(|body| {
            let record: serde_json::Value = serde_json::from_str(body).unwrap();
            format!("c{}_n{}", record["c"], record["i"])
        })
        .collect();
    let unanswered: Vec<_> = stored.difference(&answered).collect();
    assert!(unanswered.is_empty(), "stored but never answered: {unanswered:?}");
    let lost: Vec<_> = answered.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 200 but not stored: {lost:?}");
    assert!(answered.len() > 200, "{} records", answered.len());
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let config = format!("{}\n[routes.e]\npath = \"/e\"\n", head("drain_delay_ms = 600000"));
    let mut proxy = Proxy::start(&config, &[], &[]);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    eventually("draining", || async { http_get(proxy.admin, "/readyz").await.0 == 503 }).await;
    assert_eq!(
        upgrade_status(proxy.ws, "/e").await.0,
        101,
        "still accepting while draining"
    );
    // The second SIGTERM: exits well before the ten minutes of drain_delay_ms.
    let status = tokio::task::spawn_blocking(move || proxy.terminate()).await.unwrap();
    assert!(status.success(), "exit status {status}");
}
