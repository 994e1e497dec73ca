//! Sources: flows of messages towards connections, started by a filter's `subscribe`. Each
//! delivery carries an id the filter acks or nacks. Broker sources (connectors) plug in here.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::bus::Bus;
use crate::filter::abi::Opcode;

/// The sources a filter can name in `subscribe`.
pub const KINDS: &[&str] = &["bus"];

/// A message on its way to a connection, from a subscription or an upstream.
#[derive(Debug)]
pub struct Delivered {
    /// The subscription; `None` for an upstream `ws` sink's traffic.
    pub sub: Option<u64>,
    pub source: Arc<str>,
    pub id: String,
    pub opcode: Opcode,
    pub payload: Bytes,
}

/// Settles deliveries with the broker behind a subscription.
pub trait Acker: Send + Sync {
    fn ack(&self, id: &str);
    fn nack(&self, id: &str);
}

/// A running subscription; dropping it stops the flow.
pub struct Subscription {
    task: AbortHandle,
    acker: Option<Arc<dyn Acker>>,
}

impl Subscription {
    pub fn ack(&self, id: &str) {
        if let Some(acker) = &self.acker {
            acker.ack(id);
        }
    }

    pub fn nack(&self, id: &str) {
        if let Some(acker) = &self.acker {
            acker.nack(id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Sources {
    bus: Arc<Bus>,
}

impl Sources {
    pub fn new(bus: Arc<Bus>) -> Sources {
        Sources { bus }
    }

    /// Starts a flow from `source` into `out`, tagged with `sub`.
    pub fn subscribe(
        &self,
        source: &str,
        spec: &str,
        sub: u64,
        out: mpsc::Sender<Delivered>,
    ) -> Result<Subscription, String> {
        match source {
            "bus" => {
                if spec.is_empty() {
                    return Err("a bus subscription needs a topic name".into());
                }
                let mut feed = self.bus.subscribe(spec);
                let name: Arc<str> = "bus".into();
                let task = tokio::spawn(async move {
                    while let Some(message) = feed.next().await {
                        let delivered = Delivered {
                            sub: Some(sub),
                            source: name.clone(),
                            id: message.seq.to_string(),
                            opcode: message.opcode,
                            payload: message.payload,
                        };
                        if out.send(delivered).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(Subscription {
                    task: task.abort_handle(),
                    acker: None,
                })
            }
            other => Err(format!("unknown source {other:?}")),
        }
    }
}
