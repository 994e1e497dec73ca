//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/filters` (the
//! loaded filter modules as JSON) and the console (src/server/console/); behind a bearer token
//! when one is configured.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Edge;
use super::accept::Acceptor;
use super::console;

pub async fn serve(edge: Arc<Edge>, listener: TcpListener, token: Option<String>) {
    let token: Option<Arc<str>> = token.map(Into::into);
    let mut acceptor = Acceptor::new(listener, "admin", edge.metrics.edge().accept_errors);
    // Answers until the process exits: during a shutdown `/readyz` says "draining" and
    // `/metrics` shows the drain.
    let until_exit = tokio_util::sync::CancellationToken::new();
    while let Some((stream, _)) = acceptor.next(&until_exit).await {
        let edge = edge.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let edge = edge.clone();
                let allowed = token.as_deref().is_none_or(|token| bears(&request, token));
                async move {
                    let (path, query) = (request.uri().path(), request.uri().query());
                    Ok::<_, Infallible>(if !allowed {
                        unauthorized(path).map(BodyExt::boxed_unsync)
                    } else if let Some(page) = console::answer(&edge, path, query) {
                        page
                    } else {
                        answer(&edge, request).map(BodyExt::boxed_unsync)
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Whether the request carries the admin token, compared in constant time so the answer's timing
/// says nothing of how much of a guess was right: as a bearer token, or as the password of HTTP
/// Basic (any user name), which is what a browser on the console can send.
fn bears(request: &Request<Incoming>, token: &str) -> bool {
    let Some(authorization) = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes) else {
        return false;
    };
    let given = if let Some(bearer) = authorization.strip_prefix(b"Bearer ") {
        bearer.to_vec()
    } else if let Some(basic) = authorization.strip_prefix(b"Basic ") {
        let Ok(pair) = BASE64.decode(basic) else {
            return false;
        };
        match pair.iter().position(|&b| b == b':') {
            Some(colon) => pair[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    given.len() == token.len() && given.iter().zip(token.as_bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// 401, with the challenge a browser answers with its login prompt on the console's pages.
fn unauthorized(path: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"admin token required\n")));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let challenge = if console::is_console(path) {
        "Basic realm=\"framegate admin\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"framegate admin\""
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn answer(edge: &Edge, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if edge.drain.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining: shutting down\n".to_string(),
        ),
        "/readyz" => {
            // Ready while serving; parts whose broker is unreachable are listed, and make it 503.
            let down = edge.health.down();
            let warnings: String = edge
                .health
                .warnings()
                .iter()
                .map(|(part, text)| format!("{part}: warning: {text}\n"))
                .collect();
            if down.is_empty() {
                (StatusCode::OK, "text/plain", format!("ready\n{warnings}"))
            } else {
                let lines: String = down
                    .iter()
                    .map(|(part, reason)| format!("{part}: down: {reason}\n"))
                    .collect();
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", lines + &warnings)
            }
        }
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            edge.metrics.render(),
        ),
        "/filters" => {
            let modules = serde_json::to_string_pretty(&edge.host.status()).expect("plain data serializes");
            (StatusCode::OK, "application/json", modules + "\n")
        }
        other => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no admin endpoint {other}\n"),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
