//! The shared store of a module (ABI `store_*`, docs/abi.md "The shared store"): a sorted
//! key/value map held by the host for every instance of one module, whatever route or
//! connection a call is for, and kept across hot swaps. What a protocol's connections share
//! (retained records, a registry) lives here; per-connection state stays in metadata.
//! Bounded: keys and values together may not pass `LIMIT` bytes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

/// Bytes of keys and values one module's store may hold.
pub const LIMIT: usize = 64 << 20;

/// Why a store operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the module's store is full")]
    Full,
    #[error("not a counter (a decimal integer at or above 0)")]
    NotACounter,
}

#[derive(Default)]
struct Entries {
    map: BTreeMap<String, Bytes>,
    bytes: usize,
}

impl Entries {
    /// Puts `value` at `key` if the store has room for it.
    fn put(&mut self, key: &str, value: Bytes) -> Result<(), StoreError> {
        let old = self.map.get(key).map_or(0, |v| key.len() + v.len());
        let bytes = self.bytes - old + key.len() + value.len();
        if bytes > LIMIT {
            return Err(StoreError::Full);
        }
        self.bytes = bytes;
        self.map.insert(key.to_string(), value);
        Ok(())
    }
}

#[derive(Default)]
pub struct Store {
    entries: Mutex<Entries>,
}

impl Store {
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.entries.lock().unwrap().map.get(key).cloned()
    }

    /// Sets (`Some`) or deletes (`None`) a key.
    pub fn set(&self, key: &str, value: Option<Bytes>) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().unwrap();
        match value {
            Some(value) => entries.put(key, value),
            None => {
                if let Some(old) = entries.map.remove(key) {
                    entries.bytes -= key.len() + old.len();
                }
                Ok(())
            }
        }
    }

    /// The keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let entries = self.entries.lock().unwrap();
        entries
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The smallest key starting with `prefix`: what a filter evicts first when its keys sort
    /// oldest first (`store_first`), found without listing them all.
    pub fn first(&self, prefix: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap();
        let (key, _) = entries.map.range(prefix.to_string()..).next()?;
        key.starts_with(prefix).then(|| key.clone())
    }

    /// Adds `delta` to the decimal counter at `key` (absent is 0), atomically; the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut entries = self.entries.lock().unwrap();
        let current = match entries.map.get(key) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or(StoreError::NotACounter)?,
        };
        let sum = current
            .checked_add(delta)
            .filter(|n| *n >= 0)
            .ok_or(StoreError::NotACounter)?;
        entries.put(key, sum.to_string().into())?;
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_keys_add_and_the_cap() {
        let store = Store::default();
        store.set("a.2", Some("two".into())).unwrap();
        store.set("a.1", Some("one".into())).unwrap();
        store.set("b", Some("x".into())).unwrap();
        assert_eq!(store.keys("a."), ["a.1", "a.2"]);
        assert_eq!(store.first("a.").as_deref(), Some("a.1"));
        assert_eq!(store.first("b").as_deref(), Some("b"));
        assert_eq!(store.first("a.3"), None);
        assert_eq!(store.first("c"), None);
        assert_eq!(store.get("a.2").as_deref(), Some(&b"two"[..]));
        store.set("a.2", None).unwrap();
        assert_eq!(store.keys(""), ["a.1", "b"]);
        assert_eq!(store.add("n", 2), Ok(2));
        assert_eq!(store.add("n", 3), Ok(5));
        assert_eq!(store.add("n", -6), Err(StoreError::NotACounter));
        assert_eq!(store.add("b", 1), Err(StoreError::NotACounter));
        assert_eq!(store.set("big", Some(vec![0; LIMIT].into())), Err(StoreError::Full));
        store.set("a.1", None).unwrap();
        store.set("b", None).unwrap();
        store.set("n", None).unwrap();
        assert_eq!(store.entries.lock().unwrap().bytes, 0);
    }
}
