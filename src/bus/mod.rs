//! The in-process bus: named topics that sinks publish to and connections subscribe to.
//! Fan-out is at most once and never waits for a subscriber: each subscriber has its own queue,
//! whose messages hold room in its connection's backlog (`types::Backlog`) until the session
//! takes them. A subscriber that finds no room is dropped and its connection told to close
//! ("too slow"), counted in `framegate_bus_dropped`; the others get every message.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::types::{Backlog, Held, Opcode};

#[derive(Debug, Clone)]
pub struct BusMessage {
    pub opcode: Opcode,
    pub payload: Bytes,
    /// Position in the topic, from 1: the id a subscriber sees.
    pub seq: u64,
}

/// One subscriber's messages, waiting for its flow to take them.
struct Queue {
    waiting: Mutex<Waiting>,
    ready: Notify,
    backlog: Backlog,
}

#[derive(Default)]
struct Waiting {
    messages: VecDeque<(BusMessage, Held)>,
    /// Dropped for a full backlog: gets nothing more.
    dropped: bool,
}

#[derive(Default)]
struct Topic {
    seq: u64,
    subscribers: Vec<Weak<Queue>>,
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

    /// Publishes to every current subscriber with room for it; returns how many got it.
    pub fn publish(&self, topic: &str, opcode: Opcode, payload: Bytes) -> usize {
        let mut topics = self.topics.lock().unwrap();
        let t = topics.entry(topic.to_string()).or_default();
        t.seq += 1;
        let message = BusMessage {
            opcode,
            payload,
            seq: t.seq,
        };
        let mut reached = 0;
        t.subscribers.retain(|subscriber| {
            let Some(queue) = subscriber.upgrade() else {
                return false; // its subscription is gone
            };
            let mut waiting = queue.waiting.lock().unwrap();
            match queue.backlog.try_hold(message.payload.len()) {
                Some(held) => {
                    waiting.messages.push_back((message.clone(), held));
                    reached += 1;
                }
                None => {
                    waiting.dropped = true;
                    waiting.messages.clear();
                    queue.backlog.overflow();
                    self.metrics.bus_dropped(topic).inc();
                    tracing::warn!(topic, "bus subscriber too slow: dropped, its connection closed");
                }
            }
            queue.ready.notify_one();
            !waiting.dropped
        });
        reached
    }

    /// A subscriber of `topic` whose messages hold room in `backlog` until they are taken.
    pub fn subscribe(&self, topic: &str, backlog: Backlog) -> BusSubscription {
        let queue = Arc::new(Queue {
            waiting: Mutex::default(),
            ready: Notify::new(),
            backlog,
        });
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(topic.to_string())
            .or_default()
            .subscribers
            .push(Arc::downgrade(&queue));
        BusSubscription { queue }
    }
}

pub struct BusSubscription {
    queue: Arc<Queue>,
}

impl BusSubscription {
    /// The next message, with its room in the backlog; `None` once the subscriber was dropped.
    pub async fn next(&mut self) -> Option<(BusMessage, Held)> {
        loop {
            {
                let mut waiting = self.queue.waiting.lock().unwrap();
                if let Some(next) = waiting.messages.pop_front() {
                    return Some(next);
                }
                if waiting.dropped {
                    return None;
                }
            }
            // A publish between the check and here leaves a permit: no wake-up is lost.
            self.queue.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fan_out_in_order() {
        let bus = Bus::new(Arc::default());
        let backlog = Backlog::new(1 << 20);
        let (mut a, mut b) = (bus.subscribe("t", backlog.clone()), bus.subscribe("t", backlog));
        assert_eq!(bus.publish("t", Opcode::Text, "1".into()), 2);
        bus.publish("t", Opcode::Binary, "2".into());
        assert_eq!(bus.publish("other", Opcode::Text, "x".into()), 0);
        for sub in [&mut a, &mut b] {
            let (first, _) = sub.next().await.unwrap();
            assert_eq!((first.seq, first.payload.as_ref()), (1, &b"1"[..]));
            assert_eq!(sub.next().await.unwrap().0.opcode, Opcode::Binary);
        }
        drop(a);
        assert_eq!(bus.publish("t", Opcode::Text, "3".into()), 1, "a is gone");
    }

    #[tokio::test]
    async fn a_subscriber_without_room_is_dropped_and_the_others_get_everything() {
        let metrics = Arc::new(Metrics::default());
        let bus = Bus::new(metrics.clone());
        let (slow_backlog, fast_backlog) = (Backlog::new(10_000), Backlog::new(10_000));
        let mut slow = bus.subscribe("t", slow_backlog.clone());
        let mut fast = bus.subscribe("t", fast_backlog);
        let payload = Bytes::from(vec![0; 3000]);
        for seq in 1..=10 {
            let reached = bus.publish("t", Opcode::Binary, payload.clone());
            // Three fit in the slow one's 10,000 bytes; the fourth drops it.
            assert_eq!(reached, if seq <= 3 { 2 } else { 1 }, "{seq}");
            let (message, held) = fast.next().await.unwrap();
            assert_eq!(message.seq, seq);
            drop(held); // taken by its session: the room comes back
        }
        assert_eq!(metrics.bus_dropped("t").get(), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), slow_backlog.overflowed())
            .await
            .expect("its connection is told");
        assert!(slow.next().await.is_none(), "what it held is let go");
    }
}
