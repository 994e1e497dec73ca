//! The `http` sink (hyper): every record is one request (POST by default) to a URL template,
//! its payload the body, one after another on kept-alive connections, so records arrive in
//! order. Headers: the configured header templates, the record's key (as `x-framegate-key`),
//! the record's headers, and a content type from the opcode (text: `text/plain; charset=utf-8`
//! or the configured `content_type`; binary: `application/octet-stream`).
//! A confirmed record is one answered with a 2xx; its id is the status, then the `location`
//! header if the answer has one, else the start of the body (up to 100 bytes, on one line):
//! `201 /items/7`, `200 {"id":7}`, `204`. A 4xx is the server's final word: the record fails
//! at once, without the sink's retries. A 5xx, any other status, a timeout or a connection
//! error fail the record too, and the runner retries it. Plain `http://` only.

use std::sync::Arc;
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::sinks::{Deliver, SinkConnector, Start};
use super::template::Template;
use super::url::redact;
use crate::config::percent_decode_with;
use crate::health::PartHealth;
use crate::types::{DeliveryError, Opcode, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Where each record goes, e.g. `http://127.0.0.1:9000/ingest/{meta.path.tenant}`.
    pub url: String,
    /// The request method (any case).
    #[serde(default = "default_method")]
    pub method: String,
    /// The header that carries the record's key (records without a key have none).
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// How long one request may take, answer body included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The content type of text records (binary ones are `application/octet-stream`).
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_method() -> String {
    "POST".into()
}
fn default_key_header() -> String {
    "x-framegate-key".into()
}
fn default_timeout() -> u64 {
    10_000
}
fn default_content_type() -> String {
    "text/plain; charset=utf-8".into()
}

/// Bytes of an answer's body kept for the result id or the failure reason.
const EXCERPT: usize = 100;

impl Options {}

impl SinkConnector for Options {
    fn check(&self) -> Result<(), String> {
        Requests::from_options(self).map(drop)
    }

    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let http = Http::new(&self, start.health()).expect("checked when the config was loaded");
            start.run(http).await
        })
    }
}

/// The options in the shapes a request needs, checked.
struct Requests {
    url: Template,
    method: Method,
    key_header: HeaderName,
    content_type: HeaderValue,
    timeout: Duration,
}

impl Requests {
    fn from_options(options: &Options) -> Result<Requests, String> {
        if !options.url.starts_with("http://") {
            return Err(format!("url: expected an http:// URL, got {:?}", redact(&options.url)));
        }
        Ok(Requests {
            url: Template::parse(&options.url).map_err(|e| format!("url: {e}"))?,
            method: Method::from_bytes(options.method.to_ascii_uppercase().as_bytes())
                .map_err(|e| format!("method {:?}: {e}", options.method))?,
            key_header: HeaderName::from_bytes(options.key_header.as_bytes())
                .map_err(|e| format!("key_header: header name {:?}: {e}", options.key_header))?,
            content_type: HeaderValue::from_str(&options.content_type)
                .map_err(|e| format!("content_type {:?}: {e}", options.content_type))?,
            timeout: Duration::from_millis(options.timeout_ms),
        })
    }

    /// The request of one record; a record that cannot be one fails for good.
    fn build(&self, record: &Record) -> Result<http::Request<Full<Bytes>>, DeliveryError> {
        let refused = DeliveryError::Refused;
        // A template failure is already final, and says so.
        let url = self.url.render(record)?;
        let (url, authorization) = basic_auth(&url).map_err(|e| refused(format!("url {:?}: {e}", redact(&url))))?;
        let uri: Uri = url
            .parse()
            .map_err(|e| refused(format!("url {:?}: {e}", redact(&url))))?;
        let mut request = http::Request::builder().method(self.method.clone()).uri(uri);
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let content_type = match record.opcode {
            Opcode::Text => self.content_type.clone(),
            Opcode::Binary => HeaderValue::from_static("application/octet-stream"),
        };
        request = request.header(CONTENT_TYPE, content_type);
        let value = |name: &str, bytes: &[u8]| {
            HeaderValue::from_bytes(bytes).map_err(|_| refused(format!("header {name}: not a valid header value")))
        };
        if let Some(key) = &record.key {
            request = request.header(&self.key_header, value(self.key_header.as_str(), key)?);
        }
        for (name, bytes) in &record.headers {
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| refused(format!("header name {name:?}")))?;
            request = request.header(header, value(name, bytes)?);
        }
        request
            .body(Full::new(record.payload.clone()))
            .map_err(|e| refused(e.to_string()))
    }
}

/// A URL's `user:password@` taken out of it and made an `Authorization: Basic` header, as
/// browsers and curl do with such a URL.
fn basic_auth(url: &str) -> Result<(String, Option<HeaderValue>), url::ParseError> {
    let has_user_info = url
        .split_once("://")
        .is_some_and(|(_, rest)| rest.split(['/', '?', '#']).next().is_some_and(|a| a.contains('@')));
    if !has_user_info {
        return Ok((url.to_string(), None));
    }
    let mut parsed = url::Url::parse(url)?;
    let user = percent_decode_with(parsed.username(), false);
    let password = percent_decode_with(parsed.password().unwrap_or(""), false);
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    let credentials = BASE64_STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {credentials}")).expect("base64 is a valid header");
    value.set_sensitive(true);
    Ok((parsed.into(), Some(value)))
}

pub struct Http {
    request: Requests,
    client: Client<HttpConnector, Full<Bytes>>,
    health: PartHealth,
}

impl Http {
    pub fn new(options: &Options, health: PartHealth) -> Result<Http, String> {
        Ok(Http {
            request: Requests::from_options(options)?,
            client: Client::builder(TokioExecutor::new()).build_http(),
            health,
        })
    }

    async fn send(&self, record: &Record) -> Outcome {
        let request = self.request.build(record)?;
        let target = format!("http {} {}", request.method(), redact(&request.uri().to_string()));
        let timeout = self.request.timeout;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let (parts, mut body) = response.into_parts();
            // Read the whole body, so that the connection can carry the next request.
            let mut excerpt = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("answer body: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    let room = EXCERPT.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&data[..room.min(data.len())]);
                }
            }
            Ok::<_, String>((parts, excerpt))
        };
        let (parts, excerpt) = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                let reason = format!("{target}: {e}");
                self.health.down(&reason);
                return Err(DeliveryError::Failed(reason));
            }
            Err(_) => {
                return Err(DeliveryError::Failed(format!("{target}: no answer within {timeout:?}")));
            }
        };
        self.health.up();
        let status = parts.status;
        let excerpt = one_line(&excerpt);
        if status.is_success() {
            let detail = match parts.headers.get(LOCATION) {
                Some(location) => String::from_utf8_lossy(location.as_bytes()).into_owned(),
                None => excerpt,
            };
            Ok(format!("{} {detail}", status.as_u16()).trim_end().to_string())
        } else if status.is_client_error() {
            Err(DeliveryError::Refused(
                format!("{target}: {status} {excerpt}").trim_end().to_string(),
            ))
        } else {
            Err(DeliveryError::Failed(
                format!("{target}: {status} {excerpt}").trim_end().to_string(),
            ))
        }
    }
}

impl Deliver for Http {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            outcomes.push(self.send(record).await);
        }
        outcomes
    }
}

/// An error with its causes: hyper's own text ("client error (Connect)") says little alone.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Bytes as one line of text, whitespace runs made one space.
fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_template_that_cannot_be_filled_is_refused_once() {
        let options: Options = serde_json::from_str(r#"{"url": "http://127.0.0.1:1/{meta.tenant}"}"#).unwrap();
        let requests = Requests::from_options(&options).unwrap();
        let record = crate::connectors::template::tests::record();
        assert_eq!(
            requests.build(&record).unwrap_err().to_string(),
            "refused: \"http://127.0.0.1:1/{meta.tenant}\": the record has no metadata \"tenant\""
        );
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_never_show() {
        let (url, authorization) = basic_auth("http://app:p%40ss@127.0.0.1:1/in?token=t").unwrap();
        assert_eq!(url, "http://127.0.0.1:1/in?token=t");
        let authorization = authorization.unwrap();
        assert_eq!(authorization, "Basic YXBwOnBAc3M=", "app:p@ss");
        assert!(authorization.is_sensitive());
        assert_eq!(basic_auth("http://h/a@b").unwrap(), ("http://h/a@b".to_string(), None));

        let options: Options =
            serde_json::from_str(r#"{"url": "http://app:s3cret@127.0.0.1:1/{meta.tenant}"}"#).unwrap();
        let refused = Requests::from_options(&options)
            .unwrap()
            .build(&crate::connectors::template::tests::record())
            .unwrap_err()
            .to_string();
        assert!(!refused.contains("s3cret"), "{refused}");
    }
}
