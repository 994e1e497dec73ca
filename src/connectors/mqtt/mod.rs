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

/// Host and port of an `mqtt://HOST:PORT` URL (1883 when the port is left out).
fn broker(url: &str) -> Result<(String, u16), String> {
    let rest = (url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")))
        .ok_or_else(|| format!("mqtt url {:?}: mqtt://HOST:PORT expected", redact(url)))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse()
                .map_err(|_| format!("mqtt url {:?}: bad port", redact(url)))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        None => Ok((rest.to_string(), 1883)),
    }
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
    let (host, port) = broker(url)?;
    let mut options = MqttOptions::new(client_id, host, port);
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
        assert_eq!(broker("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884));
        assert_eq!(broker("tcp://broker/").unwrap(), ("broker".into(), 1883));
        assert_eq!(broker("mqtt://[::1]:1883").unwrap(), ("::1".into(), 1883));
        assert!(broker("http://x").unwrap_err().contains("mqtt://HOST:PORT"));
        assert!(qos(2).is_err());
    }
}
