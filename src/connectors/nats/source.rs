//! The `nats` source: a core NATS subscription (async-nats), for live fan-out across framegate
//! instances. Spec: a subject, wildcards allowed (`nsdb.>`), or `{"subject", "queue"}` (a queue
//! group: each message goes to one member). At most once, as core NATS is: what is published
//! while the subscription is not there is not seen; ack and nack are counted only. The id is the
//! message's position in the subscription, from 1. A lost server is reconnected by the client,
//! which subscribes again.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{SourceOptions, attrs, connect};
use crate::connectors::sources::{Feed, parse_spec};
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    subject: String,
    queue: Option<String>,
}

pub async fn run(
    options: Arc<SourceOptions>,
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
                let opcode = Opcode::of(&message.payload);
                if !feed.deliver(position.to_string(), opcode, message.payload, attrs).await {
                    return Ok(());
                }
            }
        }
    }
}
