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

/// What filters see of a delivery as `msg.*` metadata: `msg.source`, `msg.id`, `msg.sub` (from a
/// subscription) and what the broker tells of it, kept as fields so that building it for every
/// message allocates nothing where the broker tells nothing.
#[derive(Debug, Clone, Default)]
pub struct MessageMeta {
    pub source: Bytes,
    pub id: MessageId,
    pub sub: Option<u64>,
    /// `msg.NAME`, by NAME.
    pub attrs: Vec<(String, Bytes)>,
}

/// A delivery's id: the one its source gave, or its place in an upstream's stream (from 1).
#[derive(Debug, Clone)]
pub enum MessageId {
    Given(Bytes),
    Place(u64),
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::Given(Bytes::new())
    }
}

impl MessageMeta {
    /// The value of `msg.NAME`.
    pub fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let number = |n: u64| Cow::Owned(n.to_string().into_bytes());
        match name {
            "source" => Some(Cow::Borrowed(&self.source)),
            "id" => Some(match &self.id {
                MessageId::Given(id) => Cow::Borrowed(id),
                MessageId::Place(place) => number(*place),
            }),
            "sub" if self.sub.is_some() => self.sub.map(number),
            _ => (self.attrs.iter())
                .find(|(key, _)| key == name)
                .map(|(_, value)| Cow::Borrowed(&value[..])),
        }
    }

    /// The names of the keys it has, `msg.` included.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        let fixed = ["source", "id"].into_iter().chain(self.sub.map(|_| "sub"));
        (fixed.chain(self.attrs.iter().map(|(name, _)| name.as_str()))).map(|name| format!("msg.{name}"))
    }
}

/// A filter's verdict on a delivered message, by its id.
#[derive(Debug)]
pub enum Settle {
    Ack(String),
    Nack(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_metadata_answers_by_name_without_the_prefix_and_lists_keys_with_it() {
        let meta = MessageMeta {
            source: Bytes::from_static(b"orders"),
            id: MessageId::Place(42),
            sub: Some(7),
            attrs: vec![("key".into(), Bytes::from_static(b"k1"))],
        };
        let get = |name| meta.get(name).map(|v| String::from_utf8(v.into_owned()).unwrap());
        assert_eq!(get("source").as_deref(), Some("orders"));
        assert_eq!(get("id").as_deref(), Some("42"));
        assert_eq!(get("sub").as_deref(), Some("7"));
        assert_eq!(get("key").as_deref(), Some("k1"));
        assert_eq!(get("topic"), None);
        let keys: Vec<String> = meta.keys().collect();
        assert_eq!(keys, ["msg.source", "msg.id", "msg.sub", "msg.key"]);
        let from_upstream = MessageMeta {
            id: MessageId::Given(Bytes::from_static(b"p0/1")),
            ..MessageMeta::default()
        };
        assert_eq!(from_upstream.get("sub"), None);
        assert_eq!(from_upstream.get("id").as_deref(), Some(&b"p0/1"[..]));
        assert_eq!(from_upstream.keys().count(), 2);
    }
}
