//! Messages on their way to a connection (from a subscription, the bus or an upstream), and the
//! verdicts filters give on them.

use std::borrow::Cow;
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

/// What filters see of a delivery as `msg.*` metadata: the names are mostly fixed, so most are
/// not allocated.
pub type MessageMeta = Vec<(Cow<'static, str>, Bytes)>;

/// The `msg.*` metadata of a delivery: its source, its id, its subscription (none from an
/// upstream) and what the broker tells of it (`attrs`, as `msg.NAME`).
pub fn message_meta(source: Bytes, id: Bytes, sub: Option<u64>, attrs: Vec<(String, Bytes)>) -> MessageMeta {
    let mut meta = Vec::with_capacity(2 + usize::from(sub.is_some()) + attrs.len());
    meta.push((Cow::Borrowed("msg.source"), source));
    meta.push((Cow::Borrowed("msg.id"), id));
    if let Some(sub) = sub {
        meta.push((Cow::Borrowed("msg.sub"), Bytes::from(sub.to_string())));
    }
    meta.extend((attrs.into_iter()).map(|(name, value)| (Cow::Owned(format!("msg.{name}")), value)));
    meta
}

/// A filter's verdict on a delivered message, by its id.
#[derive(Debug)]
pub enum Settle {
    Ack(String),
    Nack(String),
}
