//! MQTT 3.1.1 (rumqttc): the `mqtt` sink (sink.rs) and source (source.rs), and the client
//! options, broker URLs and QoS levels they share.

mod sink;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rumqttc::{MqttOptions, QoS};
use tokio::sync::mpsc;

use super::sinks::{SinkConnector, Start};
use super::sources::{Feed, Flow, SourceConnector};
use super::url::redact;
use crate::config::percent_decode_with;
use crate::types::Settle;
pub use sink::SinkOptions;
pub use source::SourceOptions;

/// Pause before the event loop connects again after an error.
const RETRY: Duration = Duration::from_secs(1);

fn default_url() -> String {
    "mqtt://127.0.0.1:1883".into()
}

fn default_keep_alive() -> u64 {
    30
}

fn qos(level: u8) -> Result<QoS, String> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        other => Err(format!("qos {other}: 0 or 1 expected")),
    }
}

/// Where an `mqtt://[USER:PASSWORD@]HOST[:PORT]` URL points (port 1883 when left out), and
/// the credentials it carries.
#[derive(Debug, PartialEq)]
struct Broker {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

fn broker(url: &str) -> Result<Broker, String> {
    let expected = || format!("mqtt url {:?}: mqtt://HOST:PORT expected", redact(url));
    let parsed = url::Url::parse(url).map_err(|e| format!("mqtt url {:?}: {e}", redact(url)))?;
    if !matches!(parsed.scheme(), "mqtt" | "tcp") {
        return Err(expected());
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(expected)?;
    let credentials = (!parsed.username().is_empty() || parsed.password().is_some()).then(|| {
        let user = percent_decode_with(parsed.username(), false);
        (user, percent_decode_with(parsed.password().unwrap_or(""), false))
    });
    Ok(Broker {
        host: host.trim_matches(['[', ']']).to_string(),
        port: parsed.port().unwrap_or(1883),
        credentials,
    })
}

/// A client id unique to this process and moment, for clients that were not given one.
fn unique_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "framegate-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// rumqttc's options for a broker URL.
fn client_options(url: &str, client_id: String, keep_alive_s: u64) -> Result<MqttOptions, String> {
    let broker = broker(url)?;
    let mut options = MqttOptions::new(client_id, broker.host, broker.port);
    if let Some((user, password)) = broker.credentials {
        options.set_credentials(user, password);
    }
    options.set_keep_alive(Duration::from_secs(keep_alive_s));
    Ok(options)
}

/// Records published and not yet sent, in order, each with where its outcome goes.
impl SinkConnector for SinkOptions {
    fn check(&self) -> Result<(), String> {
        qos(self.qos.unwrap_or(1))?;
        broker(&self.url).map(drop)
    }

    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mqtt = sink::Mqtt::new(self, start.delivery, start.health());
            start.run(mqtt).await
        })
    }
}

impl SourceConnector for SourceOptions {
    fn check(&self) -> Result<(), String> {
        client_options(&self.url, "check".into(), self.keep_alive_s).map(drop)
    }

    fn subscribe(self: Arc<Self>, spec: String, feed: Feed, verdicts: mpsc::UnboundedReceiver<Settle>) -> Flow {
        Box::pin(source::run(self, spec, feed, verdicts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_broker_urls() {
        let at = |host: &str, port| Broker {
            host: host.into(),
            port,
            credentials: None,
        };
        assert_eq!(broker("mqtt://127.0.0.1:1884"), Ok(at("127.0.0.1", 1884)));
        assert_eq!(broker("tcp://broker/"), Ok(at("broker", 1883)));
        assert_eq!(broker("mqtt://[::1]:1883"), Ok(at("::1", 1883)));
        assert_eq!(
            broker("mqtt://app:p%40ss@broker:1885"),
            Ok(Broker {
                credentials: Some(("app".into(), "p@ss".into())),
                ..at("broker", 1885)
            })
        );
        assert!(broker("http://x").unwrap_err().contains("mqtt://HOST:PORT"));
        let bad = broker("mqtt://app:s3cret@broker:port").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert!(qos(2).is_err());
    }
}
