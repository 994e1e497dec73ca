//! The module's shared store (docs/abi.md, "The shared store"): a small key/value map held by
//! the host for every instance of one module, on every route that uses it, kept across hot
//! swaps. For what all connections share (a protocol's retained records, a registry);
//! per-connection state belongs in connection metadata ([`Conn::set_meta`](crate::Conn::set_meta)).
//!
//! Writes take effect at once, for every instance, and are not undone if the call later traps.
//!
//! ```no_run
//! use framegate_guest::store;
//! let seq = store::add("orders.seq", 1)?;
//! store::set(&format!("orders.{seq:020}"), b"{}")?;
//! for key in store::keys("orders.") {
//!     let value = store::get(&key);
//! }
//! # Ok::<(), framegate_guest::Error>(())
//! ```

use crate::{Error, check32, len, names, sized, sys};

/// A value, `None` when the key is absent.
pub fn get(key: &str) -> Option<Vec<u8>> {
    // SAFETY: key is ours; the helper passes a buffer it owns and its length.
    sized(256, |dst, cap| unsafe {
        sys::store_get(key.as_ptr(), len(key.as_bytes()), dst, cap)
    })
}

/// Sets a value; [`Error::Limit`] when the store would grow past its cap.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    // SAFETY: slices we own.
    check32(unsafe { sys::store_set(key.as_ptr(), len(key.as_bytes()), value.as_ptr(), len(value)) })
}

/// Removes a key (absent or not).
pub fn delete(key: &str) -> Result<(), Error> {
    // SAFETY: a slice we own; length -1 means delete.
    check32(unsafe { sys::store_set(key.as_ptr(), len(key.as_bytes()), std::ptr::null(), -1) })
}

/// The keys that start with `prefix`, sorted.
pub fn keys(prefix: &str) -> Vec<String> {
    // SAFETY: prefix is ours; the helper passes a buffer it owns and its length.
    let list = sized(256, |dst, cap| unsafe {
        sys::store_keys(prefix.as_ptr(), len(prefix.as_bytes()), dst, cap)
    });
    names(&list.unwrap_or_default())
}

/// The smallest key that starts with `prefix` (the first of [`keys`]), without listing them
/// all: with keys that sort oldest first, the oldest.
pub fn first(prefix: &str) -> Option<String> {
    // SAFETY: prefix is ours; the helper passes a buffer it owns and its length.
    let key = sized(64, |dst, cap| unsafe {
        sys::store_first(prefix.as_ptr(), len(prefix.as_bytes()), dst, cap)
    })?;
    String::from_utf8(key).ok()
}

/// Adds `delta` to the decimal counter at `key` (absent counts as 0) and returns the new value,
/// atomically: two instances adding at once both count. Counters stay at or above 0:
/// [`Error::BadArgument`] when the sum would be negative or the value there is not a decimal
/// integer.
pub fn add(key: &str, delta: i64) -> Result<i64, Error> {
    // SAFETY: a slice we own.
    Error::check(unsafe { sys::store_add(key.as_ptr(), len(key.as_bytes()), delta) })
}
