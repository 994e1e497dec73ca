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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys_are_reserved() {
        assert!(is_reserved("header.x") && is_reserved("route") && is_reserved("msg.id"));
        assert!(is_reserved("claim.sub") && is_reserved("tls.subject"));
        assert!(!is_reserved("hydra-ack") && !is_reserved("routes"));
    }
}
