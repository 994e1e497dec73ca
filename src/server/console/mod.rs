//! The console on the admin listener: one page (its files embedded in the binary), the JSON
//! snapshot it reads (`/console/snapshot`), a stream of snapshots (`/console/events`, server-sent
//! events) and a route's live tap (`/console/tap?route=NAME`). Read-only; the admin token
//! guards it like the rest of the listener.

mod samples;
mod snapshot;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::Edge;

/// What the admin listener answers with: a whole body, or an event stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/console.js");
const STYLE: &str = include_str!("page/console.css");

/// Events waiting for a slow reader of an event stream.
const STREAM_QUEUE: usize = 16;

/// The console's answer to `path`, or `None` when the path is not the console's (or the console
/// is turned off).
pub fn answer(edge: &Arc<Edge>, path: &str, query: Option<&str>) -> Option<Response<Body>> {
    if !edge.console.enabled {
        return None;
    }
    Some(match path {
        "/" => {
            let mut response = whole(StatusCode::FOUND, "text/plain", "see /console\n");
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/console"));
            response
        }
        "/console" | "/console/" => whole(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/console/console.js" => whole(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/console/console.css" => whole(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/console/snapshot" => whole(StatusCode::OK, "application/json", snapshot_json(edge)),
        "/console/events" => snapshots(edge.clone()),
        "/console/tap" => tap(edge, query),
        _ => return None,
    })
}

/// Whether `path` is one of the console's: a browser asking for it is offered a login prompt
/// (HTTP Basic, the token as password), as it cannot be told to send a bearer token.
pub fn is_console(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

fn snapshot_json(edge: &Edge) -> String {
    serde_json::to_string(&snapshot::take(edge)).expect("plain data serializes")
}

fn whole(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A snapshot every `refresh_ms`, until the reader goes or the proxy shuts down.
fn snapshots(edge: Arc<Edge>) -> Response<Body> {
    let (events, body) = event_stream();
    let every = Duration::from_millis(edge.console.refresh_ms.max(100));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = edge.shutdown.cancelled() => return,
                () = events.closed() => return,
            }
            let event = format!("event: snapshot\ndata: {}\n\n", snapshot_json(&edge));
            if events.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    body
}

/// A route's messages as they pass, while the reader stays.
fn tap(edge: &Arc<Edge>, query: Option<&str>) -> Response<Body> {
    if !edge.console.tap {
        return whole(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the tap is turned off (server.console.tap)\n",
        );
    }
    let route = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find_map(|(key, value)| (key == "route").then(|| value.into_owned()));
    let Some(route) = route else {
        return whole(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "which route? /console/tap?route=NAME\n",
        );
    };
    let Some(tap) = edge
        .router
        .load()
        .all()
        .find(|r| *r.name == route)
        .map(|r| r.tap.clone())
    else {
        return whole(StatusCode::NOT_FOUND, "text/plain", format!("no route {route}\n"));
    };
    let (events, body) = event_stream();
    let shutdown = edge.shutdown.clone();
    tokio::spawn(async move {
        let mut watch = tap.watch();
        // The first event says the tap runs, so a page knows from when it sees messages.
        let mut event = Bytes::from_static(b"event: watching\ndata: {}\n\n");
        loop {
            if events.send(event).await.is_err() {
                return;
            }
            let tapped = tokio::select! {
                tapped = watch.next() => tapped,
                () = shutdown.cancelled() => return,
                () = events.closed() => return,
            };
            let json = serde_json::to_string(&*tapped).expect("plain data serializes");
            event = Bytes::from(format!("event: message\ndata: {json}\n\n"));
        }
    });
    body
}

/// A sender of server-sent events, and the response whose body they make.
fn event_stream() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (events, receiver) = mpsc::channel(STREAM_QUEUE);
    let mut response = Response::new(EventStream(receiver).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (events, response)
}

/// A body that is whatever its channel brings, ending when the channel ends.
struct EventStream(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}
