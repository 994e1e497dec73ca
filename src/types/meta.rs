//! Connection metadata: what the host knows of a connection and what filters set, shared cheaply
//! with the records it travels with.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

/// Copy-on-write: records hold a snapshot for the price of a reference count.
pub type Meta = Arc<BTreeMap<String, Bytes>>;

const RESERVED_KEYS: [&str; 4] = ["route", "path", "peer", "query"];
/// `claim.*` (a verified token's claims) and `tls.*` (a verified client certificate) are set by
/// authentication: a filter that could change them could forge an identity.
const RESERVED_PREFIXES: [&str; 8] = [
    "conn.", "path.", "query.", "header.", "msg.", "source.", "claim.", "tls.",
];

/// Keys the host sets, which filters may read but not change.
pub fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// How much metadata filters may set on one connection: keys and bytes (names and values)
/// beside the host's own keys, which do not count. A filter's `set_meta` past it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLimit {
    pub keys: usize,
    pub bytes: usize,
}

impl Default for MetaLimit {
    /// Room for what the bundled filters keep per connection (Hydra's settings and requests in
    /// flight, a few hundred live queries), far below what a client could otherwise pile up.
    fn default() -> MetaLimit {
        MetaLimit {
            keys: 1024,
            bytes: 256 << 10,
        }
    }
}

impl MetaLimit {
    /// Whether `meta` stays within the limit once `key` holds a value of `len` bytes.
    pub fn allows(&self, meta: &BTreeMap<String, Bytes>, key: &str, len: usize) -> bool {
        let (mut keys, mut bytes) = (1, key.len() + len);
        for (name, value) in meta.iter().filter(|(name, _)| *name != key && !is_reserved(name)) {
            keys += 1;
            bytes += name.len() + value.len();
        }
        keys <= self.keys && bytes <= self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_what_filters_set_and_replacing_a_value_frees_the_old_one() {
        let limit = MetaLimit { keys: 2, bytes: 10 };
        let mut meta = BTreeMap::new();
        meta.insert("header.big".to_string(), Bytes::from(vec![0; 100]));
        assert!(limit.allows(&meta, "a", 9), "host keys do not count");
        assert!(!limit.allows(&meta, "a", 10), "11 bytes with the name");
        meta.insert("a".to_string(), Bytes::from_static(b"12345"));
        assert!(limit.allows(&meta, "a", 9), "a replaced value counts once");
        assert!(limit.allows(&meta, "b", 3));
        assert!(!limit.allows(&meta, "b", 4));
        meta.insert("b".to_string(), Bytes::new());
        assert!(!limit.allows(&meta, "c", 0), "a third key");
    }

    #[test]
    fn host_keys_are_reserved() {
        assert!(is_reserved("header.x") && is_reserved("route") && is_reserved("msg.id"));
        assert!(is_reserved("claim.sub") && is_reserved("tls.subject"));
        assert!(!is_reserved("hydra-ack") && !is_reserved("routes"));
    }
}
