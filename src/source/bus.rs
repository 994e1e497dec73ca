//! The `bus` source: a topic of the in-process bus. The spec is the topic name. Delivery is at
//! most once (see the bus); ack and nack are only counted. The id is the message's position.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Feed, Settle};
use crate::bus::Bus;

pub async fn run(
    bus: Arc<Bus>,
    topic: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a bus subscription needs a topic name".into());
    }
    let mut messages = bus.subscribe(&topic);
    loop {
        tokio::select! {
            verdict = verdicts.recv() => match verdict {
                Some(verdict) => feed.settled(&verdict),
                None => return Ok(()),
            },
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                if !feed.deliver(message.seq.to_string(), message.opcode, message.payload, Vec::new()).await {
                    return Ok(());
                }
            }
        }
    }
}
