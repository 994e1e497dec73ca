//! Messages on their way to a connection (from a subscription, the bus or an upstream), and the
//! verdicts filters give on them.

use std::sync::Arc;

use bytes::Bytes;

use super::{Held, Opcode};

/// A message on its way to a connection, from a subscription or an upstream.
#[derive(Debug)]
pub struct Delivered {
    /// The subscription; `None` for an upstream `ws` sink's traffic.
    pub sub: Option<u64>,
    pub source: Arc<str>,
    pub id: String,
    pub opcode: Opcode,
    pub payload: Bytes,
    /// What the broker tells of the message, shown to filters as `msg.NAME`: `key`, `topic`,
    /// `publish_time` (ms), `redelivery_count`, `header.NAME` and the connector's own.
    pub attrs: Vec<(String, Bytes)>,
    /// Its room in the connection's backlog, until the session has taken it.
    pub held: Option<Held>,
}

/// A filter's verdict on a delivered message, by its id.
#[derive(Debug)]
pub enum Settle {
    Ack(String),
    Nack(String),
}
