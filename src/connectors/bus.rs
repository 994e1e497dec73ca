//! The in-process bus as a connector. The `bus` sink publishes records on a topic; the outcome's
//! detail is the number of subscribers that got the record. The `bus` source (built in, named
//! `bus`) is a topic: the spec is the topic name, delivery is at most once (see the bus: a
//! subscriber whose connection's backlog is full is dropped and the connection closed), ack and
//! nack are only counted, and the id is the message's position.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::sinks::{Deliver, SinkConnector, Start};
use super::sources::Feed;
use crate::bus::Bus;
use crate::types::{Outcome, Record, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    pub topic: String,
}

impl SinkConnector for SinkOptions {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        let bus = BusSink::new(start.bus(), &self);
        Box::pin(start.run(bus))
    }
}

pub struct BusSink {
    bus: Arc<Bus>,
    topic: String,
}

impl BusSink {
    pub fn new(bus: Arc<Bus>, options: &SinkOptions) -> BusSink {
        BusSink {
            bus,
            topic: options.topic.clone(),
        }
    }
}

impl Deliver for BusSink {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        batch
            .iter()
            .map(|r| Ok(self.bus.publish(&self.topic, r.opcode, r.payload.clone()).to_string()))
            .collect()
    }
}

/// A subscription to one topic, until the connection lets go of it.
pub async fn run(
    bus: Arc<Bus>,
    topic: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a bus subscription needs a topic name".into());
    }
    let mut messages = bus.subscribe(&topic, feed.backlog().clone());
    loop {
        tokio::select! {
            verdict = verdicts.recv() => match verdict {
                Some(verdict) => feed.settled(&verdict),
                None => return Ok(()),
            },
            message = messages.next() => {
                // None: dropped for a full backlog; the connection is closing.
                let Some((message, held)) = message else { return Ok(()) };
                if !feed.deliver_held(message.seq.to_string(), message.opcode, message.payload, Vec::new(), held).await {
                    return Ok(());
                }
            }
        }
    }
}
