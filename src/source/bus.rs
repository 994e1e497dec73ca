//! The `bus` source: a topic of the in-process bus. The spec is the topic name. Delivery is at
//! most once (see the bus); ack and nack do nothing. The id is the message's position.

use std::sync::Arc;

use crate::bus::Bus;

use super::Feed;

pub async fn run(bus: Arc<Bus>, topic: String, feed: Feed) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a bus subscription needs a topic name".into());
    }
    let mut messages = bus.subscribe(&topic);
    while let Some(message) = messages.next().await {
        if !feed
            .deliver(message.seq.to_string(), message.opcode, message.payload, Vec::new())
            .await
        {
            break;
        }
    }
    Ok(())
}
