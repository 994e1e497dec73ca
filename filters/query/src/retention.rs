//! The retained window: the last `count` records of each metric, younger than `max_age_ms`,
//! in the module's shared store (so every connection of every route using the module sees the
//! same window). Layout: `seq␟DB␟NS␟METRIC` is the metric's counter, and each record is
//! `rec␟DB␟NS␟METRIC␟SEQ` (SEQ zero-padded, so keys sort in arrival order) holding
//! `ARRIVAL_MS BIT_JSON`. The counter is atomic, so concurrent inserts never share a number, and
//! record `seq - count` is deleted when record `seq` is written: the window holds `count`.

use framegate_guest::{Conn, Error, store};
use serde::Deserialize;

use crate::eval::Bit;

/// How much each metric keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "default_count")]
    pub count: u64,
    #[serde(default = "default_max_age")]
    pub max_age_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            count: default_count(),
            max_age_ms: default_max_age(),
        }
    }
}

fn default_count() -> u64 {
    1000
}

fn default_max_age() -> i64 {
    3_600_000
}

/// A metric: db, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub db: String,
    pub namespace: String,
    pub name: String,
}

impl Metric {
    fn id(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.db, self.namespace, self.name)
    }

    fn record_key(&self, seq: i64) -> String {
        format!("rec\u{1f}{}\u{1f}{seq:020}", self.id())
    }
}

/// Keeps a record; returns its number in the metric (from 1).
pub fn keep(metric: &Metric, bit_json: &str, retention: &Retention, now: i64) -> Result<i64, Error> {
    let seq = store::add(&format!("seq\u{1f}{}", metric.id()), 1)?;
    store::set(&metric.record_key(seq), format!("{now} {bit_json}").as_bytes())?;
    let old = seq - retention.count as i64;
    if old > 0 {
        store::delete(&metric.record_key(old))?;
    }
    Ok(seq)
}

/// The window of a metric, oldest first, and the number of its newest record (0 if none).
/// Records past their age are dropped from the store on the way.
pub fn window(metric: &Metric, retention: &Retention, now: i64) -> (Vec<Bit>, i64) {
    let mut bits = Vec::new();
    let mut newest = 0;
    for key in store::keys(&format!("rec\u{1f}{}\u{1f}", metric.id())) {
        let Some(seq) = key.rsplit('\u{1f}').next().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Some(value) = store::get(&key) else { continue };
        let text = String::from_utf8_lossy(&value);
        let Some((arrival, json)) = text.split_once(' ') else {
            continue;
        };
        if arrival.parse::<i64>().is_ok_and(|t| now - t > retention.max_age_ms) {
            let _ = store::delete(&key);
            continue;
        }
        newest = newest.max(seq);
        if let Ok(bit) = serde_json::from_str(json)
            .map_err(|e| e.to_string())
            .and_then(|v| Bit::from_json(&v, 0))
        {
            bits.push(bit);
        }
    }
    (bits, newest)
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
    if store::add("origin.claim", 1) == Ok(1) {
        let _ = store::set("origin", mine.as_bytes());
        return mine;
    }
    local_origin().unwrap_or(mine)
}

/// This process's origin, once an insert made it.
pub fn local_origin() -> Option<String> {
    store::get("origin").and_then(|id| String::from_utf8(id).ok())
}
