//! The retained window, in the module's shared store (so every connection of every route using
//! the module sees the same one): per metric the last `count` records younger than
//! `max_age_ms`, and all metrics together at most `max_bytes`, the oldest records of any metric
//! going first when an insert needs room. So one client inserting without end pushes old
//! records out; it cannot fill the store for everyone.
//!
//! Layout (numbers zero-padded to 20 digits, so keys sort in arrival order):
//! - `seq`: the counter numbering records, all metrics together (each record's `seq` in its
//!   envelope, and a subscription's high-water mark, are such numbers);
//! - `rec␟DB␟NS␟METRIC␟LAST␟FIRST`: a batch, the records of one insert message for one metric,
//!   numbered FIRST to LAST: `ARRIVAL_MS TXN`, then one bit's JSON per line. One store write
//!   makes a batch visible whole, or not at all;
//! - `txn␟N`: the commit mark of an insert message spanning several metrics, written after all
//!   its batches; their TXN is N and a reader passes over them while it is absent (TXN `-`: one
//!   metric, no mark);
//! - `ord␟N`: `SIZE KEY` for each batch (N its FIRST) and commit mark: keys in insert order,
//!   so `store::first("ord␟")` is the oldest. SIZE is what the entry and its `ord` key take;
//! - `bytes`: the sum of those sizes: what `max_bytes` bounds.

use framegate_guest::{Conn, Error, count, store};
use serde::Deserialize;

use crate::eval::Bit;

/// How much the window keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Records per metric.
    #[serde(default = "default_count")]
    pub count: u64,
    #[serde(default = "default_max_age")]
    pub max_age_ms: i64,
    /// Bytes of all metrics together (records with their keys).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            count: default_count(),
            max_age_ms: default_max_age(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_count() -> u64 {
    1000
}

fn default_max_age() -> i64 {
    3_600_000
}

fn default_max_bytes() -> u64 {
    32 << 20
}

/// The largest `max_bytes`: the host's store holds 64 MiB per module, and the counters, the
/// origin and an eviction's lag need some room beside the records.
pub const MAX_BYTES_CAP: u64 = 56 << 20;

/// Batches one call may evict to make room: each costs a few host calls, and a call has a
/// deadline. What is still over `max_bytes` after that goes at the next inserts.
const MAX_EVICTIONS: usize = 256;

const SEQ: &str = "seq";
const BYTES: &str = "bytes";
const ORD: &str = "ord\u{1f}";
/// A batch of a message of one metric: no commit mark to wait for.
const NO_TXN: &str = "-";

/// A metric: db, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub db: String,
    pub namespace: String,
    pub name: String,
}

impl Metric {
    fn batches(&self) -> String {
        format!("rec\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}", self.db, self.namespace, self.name)
    }

    fn batch(&self, first: i64, last: i64) -> String {
        format!("{}{last:020}\u{1f}{first:020}", self.batches())
    }
}

fn ord_key(n: i64) -> String {
    format!("{ORD}{n:020}")
}

fn txn_key(n: i64) -> String {
    format!("txn\u{1f}{n:020}")
}

/// A batch key's first and last record numbers.
fn numbers(key: &str) -> Option<(i64, i64)> {
    let mut parts = key.rsplit('\u{1f}');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    Some((first, last))
}

/// An entry to write: its key and value, and its `ord` key and value.
struct Entry {
    key: String,
    value: Vec<u8>,
    ord: String,
    ord_value: String,
}

impl Entry {
    fn new(key: String, value: Vec<u8>, n: i64) -> Entry {
        let ord = ord_key(n);
        // The size is 20 digits wide, so that it can count the value it is part of.
        let size = key.len() + value.len() + ord.len() + 21 + key.len();
        let ord_value = format!("{size:020} {key}");
        Entry {
            key,
            value,
            ord,
            ord_value,
        }
    }

    fn size(&self) -> u64 {
        (self.key.len() + self.value.len() + self.ord.len() + self.ord_value.len()) as u64
    }
}

/// Why an insert could not be kept.
pub fn refused(why: Error) -> String {
    format!("the window could not keep it: {why}")
}

/// Keeps the records of one insert message, each metric's bits (JSON) in order, all or none:
/// returns the number of each metric's first record (the others follow it). Nothing a reader
/// sees is written until everything else is done: then one write per metric, and for a
/// message of several metrics a commit mark last.
pub fn keep(groups: &[(Metric, Vec<String>)], retention: &Retention, now: i64) -> Result<Vec<i64>, String> {
    let records: usize = groups.iter().map(|(_, bits)| bits.len()).sum();
    let mixed = groups.len() > 1;
    // One number per record, and one more for the commit mark of a message of several metrics.
    let numbers = (records + usize::from(mixed)) as i64;
    let last = with_room(|| store::add(SEQ, numbers)).map_err(refused)?;
    let mut next = last - numbers + 1;
    let txn = if mixed { last.to_string() } else { NO_TXN.to_string() };
    let mut firsts = Vec::new();
    let mut entries = Vec::new();
    for (metric, bits) in groups {
        let first = next;
        next += bits.len() as i64;
        let value = format!("{now} {txn}\n{}", bits.join("\n"));
        entries.push(Entry::new(metric.batch(first, next - 1), value.into_bytes(), first));
        firsts.push(first);
    }
    if mixed {
        entries.push(Entry::new(txn_key(last), now.to_string().into_bytes(), last));
    }
    let size: u64 = entries.iter().map(Entry::size).sum();
    if size > retention.max_bytes {
        return Err(format!(
            "the window could not keep it: {size} bytes, more than retention.max_bytes ({})",
            retention.max_bytes
        ));
    }
    // The metrics' own records past `count` first, then, if still needed, anyone's oldest.
    for (metric, bits) in groups {
        trim(metric, bits.len() as u64, retention);
    }
    make_room(size, retention);
    for entry in &entries {
        with_room(|| store::set(&entry.ord, entry.ord_value.as_bytes())).map_err(refused)?;
    }
    let _ = store::add(BYTES, size as i64);
    // The batches, then the mark: from here on the records are visible.
    for entry in &entries {
        with_room(|| store::set(&entry.key, &entry.value)).map_err(refused)?;
    }
    Ok(firsts)
}

/// Takes back what `keep` kept (when the records could not be sent on).
pub fn forget(groups: &[(Metric, Vec<String>)], firsts: &[i64]) {
    for ((metric, bits), first) in groups.iter().zip(firsts) {
        drop_entry(&metric.batch(*first, first + bits.len() as i64 - 1), *first);
    }
}

/// `op`, evicting the oldest entry each time the store is full, as long as there is one.
fn with_room<T>(mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    for _ in 0..MAX_EVICTIONS {
        match op() {
            Err(Error::Limit) if evict_oldest() => continue,
            done => return done,
        }
    }
    op()
}

/// The bytes entries take, as counted.
fn used() -> u64 {
    let bytes = store::get(BYTES).unwrap_or_default();
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0)
}

/// Evicts the oldest entries until `size` more bytes fit in `max_bytes` (or `MAX_EVICTIONS`
/// went).
fn make_room(size: u64, retention: &Retention) {
    for _ in 0..MAX_EVICTIONS {
        if used() + size <= retention.max_bytes || !evict_oldest() {
            return;
        }
    }
}

/// Removes the oldest entry; false when there is none.
fn evict_oldest() -> bool {
    let Some(ord) = store::first(ORD) else {
        return false;
    };
    let value = store::get(&ord).unwrap_or_default();
    let value = String::from_utf8_lossy(&value);
    let (size, key) = value.split_once(' ').unwrap_or(("0", ""));
    if let Some((first, last)) = numbers(key).filter(|_| key.starts_with("rec\u{1f}")) {
        count("records_evicted", (last - first + 1) as f64);
    }
    let _ = store::delete(key);
    let _ = store::delete(&ord);
    release(size.parse().unwrap_or(0));
    true
}

/// Removes an entry (a batch or a commit mark) and its `ord` key.
fn drop_entry(key: &str, n: i64) {
    let ord = ord_key(n);
    let size = store::get(&ord)
        .and_then(|v| String::from_utf8_lossy(&v).split_once(' ')?.0.parse().ok())
        .unwrap_or(0);
    let _ = store::delete(key);
    let _ = store::delete(&ord);
    release(size);
}

/// Takes `size` bytes off the count (which two instances dropping the same entry at once may
/// take twice: it stays at 0 then, and the store's own cap is the backstop).
fn release(size: i64) {
    if size > 0 && store::add(BYTES, -size).is_err() {
        let _ = store::set(BYTES, b"0");
    }
}

/// Drops the batches of a metric that `adding` new records push past `count`.
fn trim(metric: &Metric, adding: u64, retention: &Retention) {
    let mut kept = adding;
    for key in store::keys(&metric.batches()).iter().rev() {
        let Some((first, last)) = numbers(key) else {
            continue;
        };
        if kept >= retention.count {
            drop_entry(key, first);
        } else {
            kept += (last - first + 1) as u64;
        }
    }
}

/// The window of a metric, oldest first, and the number of its newest record (0 if none).
/// Batches past their age are dropped from the store on the way; those of a message whose
/// commit mark is not there (not yet, or never: its call failed) are passed over.
pub fn window(metric: &Metric, retention: &Retention, now: i64) -> (Vec<Bit>, i64) {
    let mut newest_first: Vec<Vec<Bit>> = Vec::new();
    let mut left = retention.count as usize;
    let mut newest = 0;
    for key in store::keys(&metric.batches()).iter().rev() {
        if left == 0 {
            break;
        }
        let (Some((first, last)), Some(value)) = (numbers(key), store::get(key)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&value);
        let (head, lines) = text.split_once('\n').unwrap_or((&text, ""));
        let (arrival, txn) = head.split_once(' ').unwrap_or((head, NO_TXN));
        if arrival.parse::<i64>().is_ok_and(|t| now - t > retention.max_age_ms) {
            drop_entry(key, first);
            continue;
        }
        if txn != NO_TXN && txn.parse().is_ok_and(|n| store::get(&txn_key(n)).is_none()) {
            continue;
        }
        newest = newest.max(last);
        let mut bits: Vec<Bit> = (lines.lines())
            .filter_map(|line| Bit::from_json(&serde_json::from_str(line).ok()?, 0).ok())
            .collect();
        bits.drain(..bits.len().saturating_sub(left));
        left -= bits.len();
        newest_first.push(bits);
    }
    (newest_first.into_iter().rev().flatten().collect(), newest)
}

/// This framegate process among others sharing records (over NATS): records carry it, so that
/// the check against a subscription's first answer, which knows this process's record numbers
/// only, is applied to records kept here and to no others. Made once, by the first insert.
pub fn origin(conn: &Conn, now: i64) -> String {
    if let Some(id) = local_origin() {
        return id;
    }
    // The client's ephemeral port and the time tell processes apart.
    let seed = format!("{now}{}{}", conn.meta_str("peer").unwrap_or_default(), conn.id());
    let mine = format!("{:016x}", crate::fnv1a(crate::FNV_OFFSET, seed.as_bytes()));
    // Instances of this process may get here at once: the first to count makes it.
    if with_room(|| store::add("origin.claim", 1)) == Ok(1) {
        let _ = with_room(|| store::set("origin", mine.as_bytes()));
        return mine;
    }
    local_origin().unwrap_or(mine)
}

/// This process's origin, once an insert made it.
pub fn local_origin() -> Option<String> {
    store::get("origin").and_then(|id| String::from_utf8(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_insert_order_and_carry_their_numbers() {
        let metric = Metric {
            db: "db".into(),
            namespace: "ns".into(),
            name: "m".into(),
        };
        let (older, newer) = (metric.batch(1, 9), metric.batch(10, 10));
        assert!(older < newer && older.starts_with(&metric.batches()));
        assert_eq!((numbers(&older), numbers(&newer)), (Some((1, 9)), Some((10, 10))));
        assert_eq!(numbers("rec\u{1f}db\u{1f}ns\u{1f}m\u{1f}00000000000000000005"), None);
        assert!(ord_key(99) < ord_key(100));
        let entry = Entry::new(older.clone(), b"0 -\n{}".to_vec(), 1);
        let (size, key) = entry.ord_value.split_once(' ').unwrap();
        assert_eq!((size.parse::<u64>().unwrap(), key), (entry.size(), older.as_str()));
    }
}
