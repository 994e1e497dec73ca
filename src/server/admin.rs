//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/filters`
//! (the loaded filter modules as JSON).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Edge;
use super::accept::Acceptor;

pub async fn serve(edge: Arc<Edge>, listener: TcpListener) {
    let mut acceptor = Acceptor::new(listener, "admin", edge.metrics.edge().accept_errors);
    while let Some((stream, _)) = acceptor.next(&edge.shutdown).await {
        let edge = edge.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(answer(&edge, request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(edge: &Edge, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if edge.shutdown.is_cancelled() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".to_string(),
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
