//! The in-process bus: named topics that sinks publish to and connections subscribe to.
//! Fan-out is at most once: a subscriber that falls more than `CAPACITY` messages behind
//! misses the oldest ones, and that is counted (`framegate_bus_dropped`), never silent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::types::Opcode;

/// Messages a subscriber may lag behind before it misses some.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub struct BusMessage {
    pub opcode: Opcode,
    pub payload: Bytes,
    /// Position in the topic, from 1: the id a subscriber sees.
    pub seq: u64,
}

struct Topic {
    sender: broadcast::Sender<BusMessage>,
    seq: u64,
}

pub struct Bus {
    topics: Mutex<HashMap<String, Topic>>,
    metrics: Arc<Metrics>,
}

impl Bus {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Bus> {
        Arc::new(Bus {
            topics: Mutex::default(),
            metrics,
        })
    }

    fn with_topic<R>(&self, name: &str, f: impl FnOnce(&mut Topic) -> R) -> R {
        let mut topics = self.topics.lock().unwrap();
        let topic = topics.entry(name.to_string()).or_insert_with(|| Topic {
            sender: broadcast::channel(CAPACITY).0,
            seq: 0,
        });
        f(topic)
    }

    /// Publishes to every current subscriber; returns how many there were.
    pub fn publish(&self, topic: &str, opcode: Opcode, payload: Bytes) -> usize {
        self.with_topic(topic, |t| {
            t.seq += 1;
            let message = BusMessage {
                opcode,
                payload,
                seq: t.seq,
            };
            t.sender.send(message).unwrap_or(0)
        })
    }

    pub fn subscribe(&self, topic: &str) -> BusSubscription {
        BusSubscription {
            receiver: self.with_topic(topic, |t| t.sender.subscribe()),
            dropped: self.metrics.bus_dropped(topic),
        }
    }
}

pub struct BusSubscription {
    receiver: broadcast::Receiver<BusMessage>,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl BusSubscription {
    /// The next message; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<BusMessage> {
        loop {
            match self.receiver.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.dropped.inc_by(missed);
                    tracing::warn!(missed, "bus subscriber too slow: oldest messages skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_in_order() {
        let bus = Bus::new(Arc::default());
        let (mut a, mut b) = (bus.subscribe("t"), bus.subscribe("t"));
        assert_eq!(bus.publish("t", Opcode::Text, "1".into()), 2);
        bus.publish("t", Opcode::Binary, "2".into());
        assert_eq!(bus.publish("other", Opcode::Text, "x".into()), 0);
        for sub in [&mut a, &mut b] {
            let first = sub.next().await.unwrap();
            assert_eq!((first.seq, first.payload.as_ref()), (1, &b"1"[..]));
            assert_eq!(sub.next().await.unwrap().opcode, Opcode::Binary);
        }
    }
}
