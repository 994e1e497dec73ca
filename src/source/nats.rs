//! The `nats` source: a core NATS subscription (async-nats), for live fan-out across framegate
//! instances. Spec: a subject, wildcards allowed (`nsdb.>`), or `{"subject", "queue"}` (a queue
//! group: each message goes to one member). At most once, as core NATS is: what is published
//! while the subscription is not there is not seen; ack and nack are counted only. The id is the
//! message's position in the subscription, from 1. A lost server is reconnected by the client,
//! which subscribes again.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Feed, Settle, opcode_of, parse_spec};
use crate::sink::nats::{connect, default_url};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default = "default_url")]
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    subject: String,
    queue: Option<String>,
}

/// What a NATS message tells a filter: `msg.topic` (the subject), `msg.key` (header `key`, as
/// framegate's NATS sinks write it) and `msg.header.NAME`.
pub(super) fn attrs(subject: &str, headers: Option<&async_nats::HeaderMap>) -> Vec<(String, Bytes)> {
    let mut attrs = vec![("topic".to_string(), Bytes::copy_from_slice(subject.as_bytes()))];
    for (name, values) in headers.iter().flat_map(|h| h.iter()) {
        for value in values {
            let value = Bytes::copy_from_slice(value.as_str().as_bytes());
            if name.as_ref() as &str == "key" {
                attrs.push(("key".to_string(), value));
            } else {
                attrs.push((format!("header.{name}"), value));
            }
        }
    }
    attrs
}

pub async fn run(
    options: Arc<Options>,
    spec: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "subject")?;
    let client = connect(&options.url).await?;
    let subscribed = match spec.queue {
        Some(queue) => client.queue_subscribe(spec.subject.clone(), queue).await,
        None => client.subscribe(spec.subject.clone()).await,
    };
    let mut messages = subscribed.map_err(|e| format!("nats subscribe {:?}: {e}", spec.subject))?;
    feed.health.up();
    let mut position: u64 = 0;
    loop {
        tokio::select! {
            verdict = verdicts.recv() => match verdict {
                Some(verdict) => feed.settled(&verdict),
                None => {
                    let _ = messages.unsubscribe().await;
                    return Ok(());
                }
            },
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                position += 1;
                let attrs = attrs(&message.subject, message.headers.as_ref());
                let opcode = opcode_of(&message.payload);
                if !feed.deliver(position.to_string(), opcode, message.payload, attrs).await {
                    return Ok(());
                }
            }
        }
    }
}
