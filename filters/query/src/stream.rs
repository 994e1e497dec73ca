//! The `/ws-stream` side: subscribe and unsubscribe messages, the records the source (the bus,
//! NATS, a Kafka topic) delivers, and the pacing timers. Everything about a connection's
//! subscriptions is its metadata:
//!
//! - `q.quids`: the connection's quids, one per line (identical queries share one), each with
//!   the newest record number its first answer covered (`QUID HW`), so that a record both in
//!   that answer and still on its way on the bus is not pushed twice;
//! - `q.def.QUID`: the subscribe message, re-parsed when an instance has no cached copy;
//! - `q.last.QUID`: when the last push went; `q.buf.QUID`: the records waiting for the next
//!   one (one JSON record per line, at most `retention_size`);
//! - `q.timer.QUID` and `q.t.TIMER`: the pending flush (or, for a windowed query, the next
//!   refresh) and which quid a timer is for;
//! - `q.res.QUID`: a windowed query's last answer, pushed again only when it changes.
//!
//! A delivery (one record, or the records of one insert message, one envelope per line) costs
//! one Wasm call per connection; an instance parses it once and matches each distinct query once
//! (`Delivered`), whichever of the connections it serves hold that query.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use framegate_guest::{Conn, Level, Message, Opcode, Open, Verdict, count, log, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eval::{self, Bit};
use crate::retention::{self, Metric};
use crate::sql::{self, Expr, Op, Select, Term};
use crate::{Config, FNV_OFFSET, error_reply, fnv1a, json};

const QUIDS: &str = "q.quids";
/// Subscriptions one connection may hold: each may need a timer, and the host allows 1024
/// subscriptions and timers per connection.
const MAX_QUERIES: usize = 1000;
/// Parsed queries an instance keeps before it starts over.
const CACHE: usize = 4096;
const INVALID: &str = "invalid message sent";
/// `filters` entries in one subscribe message (each is a condition, AND-ed onto the query's).
const MAX_FILTERS: usize = 64;

/// A subscribe message, as NSDb's RegisterQuery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscribe {
    db: String,
    namespace: String,
    metric: String,
    #[serde(rename = "queryString")]
    query_string: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filters: Option<Vec<Value>>,
}

/// A subscription ready to match: the query with its filters and time bounds in the condition.
#[derive(Debug)]
pub struct Compiled {
    quid: String,
    metric: Metric,
    select: Select,
    windowed: bool,
}

/// What the bus carries: an insert body with the record's number in its metric.
#[derive(Deserialize)]
struct Envelope {
    db: String,
    namespace: String,
    metric: String,
    /// Where `seq` counts: the process that kept the record (absent from other producers).
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    seq: i64,
    bit: Value,
}

/// A UUID-shaped id from the query's canonical form: the same query gets the same quid on every
/// connection and every instance, with nothing shared.
fn quid_of(canonical: &str) -> String {
    let hash = |seed| fnv1a(seed, canonical.as_bytes());
    let hex = format!("{:016x}{:016x}", hash(FNV_OFFSET), hash(0x6c62_272e_07bb_0142));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A `filters` entry as a condition; `None` when it is not one (the message is then invalid).
fn filter_expr(filter: &Value) -> Option<Expr> {
    let filter = filter.as_object()?;
    let dimension = filter.get("dimension")?.as_str()?.to_string();
    let operator = filter.get("operator")?.as_str()?.replace(' ', "").to_ascii_uppercase();
    let Some(value) = filter.get("value") else {
        return match operator.as_str() {
            "ISNULL" => Some(Expr::Null(dimension, true)),
            "ISNOTNULL" => Some(Expr::Null(dimension, false)),
            _ => None,
        };
    };
    let term = match value {
        Value::String(s) => Term::Text(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Term::Int(i),
            None => Term::Float(n.as_f64()?),
        },
        _ => return None,
    };
    let op = match operator.as_str() {
        "LIKE" => {
            let Term::Text(pattern) = term else { return None };
            return Some(Expr::Like(dimension, pattern));
        }
        "=" => Op::Eq,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        _ => return None,
    };
    Some(Expr::Compare(dimension, op, term))
}

impl Subscribe {
    /// Whether every filter is one: NSDb refuses the whole message otherwise.
    fn well_formed(&self) -> bool {
        self.filters.iter().flatten().all(|f| filter_expr(f).is_some())
    }

    /// What the query does not bound: the names, and the filters' number and sizes.
    fn check_limits(&self) -> Result<(), String> {
        if [&self.db, &self.namespace, &self.metric]
            .iter()
            .any(|n| n.len() > sql::MAX_NAME)
        {
            return Err(format!("db, namespace or metric longer than {} bytes", sql::MAX_NAME));
        }
        let filters = self.filters.as_deref().unwrap_or_default();
        if filters.len() > MAX_FILTERS {
            return Err(format!("more than {MAX_FILTERS} filters"));
        }
        for filter in filters {
            if filter["dimension"].as_str().is_some_and(|d| d.len() > sql::MAX_NAME) {
                return Err(format!("a filter's dimension: {}", sql::Limit::Name));
            }
            if filter["value"].as_str().is_some_and(|v| v.len() > sql::MAX_TEXT) {
                return Err(format!("a filter's value: {}", sql::Limit::Text));
            }
        }
        Ok(())
    }

    /// Parses and checks the query; `Err` is the failure's reason.
    fn compile(&self) -> Result<Compiled, String> {
        self.check_limits()?;
        let mut select = sql::parse(&self.query_string)?;
        eval::check(&select)?;
        if select.metric != self.metric {
            return Err(format!(
                "the query reads metric {} but the subscription names metric {}",
                select.metric, self.metric
            ));
        }
        let bounds = [
            self.from
                .map(|t| Expr::Compare("timestamp".into(), Op::Ge, Term::Int(t))),
            self.to.map(|t| Expr::Compare("timestamp".into(), Op::Le, Term::Int(t))),
        ];
        let extra = self
            .filters
            .iter()
            .flatten()
            .filter_map(filter_expr)
            .chain(bounds.into_iter().flatten());
        select.condition = select
            .condition
            .take()
            .into_iter()
            .chain(extra)
            .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)));
        let metric = Metric {
            db: self.db.clone(),
            namespace: self.namespace.clone(),
            name: self.metric.clone(),
        };
        Ok(Compiled {
            quid: quid_of(&format!("{}\u{1f}{}\u{1f}{select:?}", self.db, self.namespace)),
            windowed: eval::windowed(&select),
            metric,
            select,
        })
    }

    /// The keys every answer to a subscription starts with.
    fn head(&self) -> String {
        format!(
            "\"db\":{},\"namespace\":{},\"metric\":{},\"queryString\":{}",
            json(&self.db),
            json(&self.namespace),
            json(&self.metric),
            json(&self.query_string)
        )
    }

    fn failure(&self, reason: &str) -> String {
        format!("{{{},\"reason\":{}}}", self.head(), json(reason))
    }

    fn success(&self, quid: &str, records: &str) -> String {
        format!("{{{},\"quid\":{},\"records\":[{records}]}}", self.head(), json(quid))
    }
}

fn key(name: &str, quid: &str) -> String {
    format!("q.{name}.{quid}")
}

/// Which quid timer `timer` is for.
fn timer_key(timer: impl std::fmt::Display) -> String {
    format!("q.t.{timer}")
}

/// Keeps a parsed subscription in the instance's cache, which starts over when full.
fn remember(cache: &mut HashMap<String, Rc<Compiled>>, compiled: Rc<Compiled>) {
    if cache.len() >= CACHE {
        cache.clear();
    }
    cache.insert(compiled.quid.clone(), compiled);
}

fn meta_i64(conn: &Conn, key: &str) -> Option<i64> {
    conn.meta_str(key)?.parse().ok()
}

/// The connection's subscriptions: (quid, high-water record number), in subscribe order.
fn quids(conn: &Conn) -> Vec<(String, i64)> {
    conn.meta_str(QUIDS)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (quid, hw) = line.split_once(' ')?;
            Some((quid.to_string(), hw.parse().ok()?))
        })
        .collect()
}

fn save_quids(conn: &Conn, list: &[(String, i64)]) -> Result<(), framegate_guest::Error> {
    let lines: Vec<String> = list.iter().map(|(quid, hw)| format!("{quid} {hw}")).collect();
    conn.set_meta(QUIDS, lines.join("\n").as_bytes())
}

fn holds(list: &[(String, i64)], quid: &str) -> bool {
    list.iter().any(|(q, _)| q == quid)
}

/// The connection's `refresh_period` (checked at the upgrade), in milliseconds.
fn period(config: &Config, conn: &Conn) -> i64 {
    meta_i64(conn, "query.refresh_period")
        .unwrap_or_else(|| i64::from(config.refresh_period_ms.unwrap_or(config.min_refresh_period_ms)))
}

fn retention_size(config: &Config, conn: &Conn) -> i64 {
    meta_i64(conn, "query.retention_size").unwrap_or_else(|| i64::from(config.retention_size))
}

/// Records as a JSON array's inside.
fn joined(records: &[Bit]) -> String {
    records.iter().map(Bit::to_json).collect::<Vec<_>>().join(",")
}

/// The subscription behind a quid of this connection: cached, or parsed again from metadata.
fn compiled(cache: &mut HashMap<String, Rc<Compiled>>, conn: &Conn, quid: &str) -> Option<Rc<Compiled>> {
    if let Some(found) = cache.get(quid) {
        return Some(found.clone());
    }
    let subscribe: Subscribe = serde_json::from_slice(&conn.meta(&key("def", quid))?).ok()?;
    let found = Rc::new(subscribe.compile().ok()?);
    remember(cache, found.clone());
    Some(found)
}

pub fn open(config: &Config, conn: &Conn) -> Open {
    let refuse = |why: String| {
        let _ = conn.reject(400, why.as_bytes());
        Open::Reject
    };
    let min = i64::from(config.min_refresh_period_ms);
    if let Some(asked) = conn.meta_str("query.refresh_period") {
        match asked.parse::<i64>() {
            Ok(p) if p >= min => {}
            Ok(p) => {
                return refuse(format!(
                    "publish period of {p} milliseconds cannot be used, must be greater or equal to {min}"
                ));
            }
            Err(_) => return refuse(format!("refresh_period {asked:?} is not a number of milliseconds")),
        }
    }
    if let Some(size) = conn.meta_str("query.retention_size")
        && !size.parse::<u32>().is_ok_and(|n| n > 0)
    {
        return refuse(format!("retention_size {size:?} is not a number of records above 0"));
    }
    let spec = config.topic.replace("{conn}", &format!("{:x}-{}", now_ms(), conn.id()));
    match conn.subscribe(&config.source, &spec) {
        Ok(_) => Open::Accept,
        Err(e) => {
            let _ = conn.reject(
                500,
                format!("cannot subscribe to {} {}: {e}", config.source, config.topic).as_bytes(),
            );
            Open::Reject
        }
    }
}

pub fn message(
    config: &Config,
    cache: &mut HashMap<String, Rc<Compiled>>,
    conn: &Conn,
    message: &mut Message,
) -> Verdict {
    let value = match (message.opcode(), message.text()) {
        (Opcode::Text, Some(text)) => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    };
    let reply = match value {
        Some(Value::Object(o)) if o.get("unsubscribe") == Some(&Value::Bool(true)) => match o.get("quid") {
            Some(Value::String(quid)) => unsubscribe(conn, quid),
            _ => error_reply(INVALID),
        },
        Some(value) => match serde_json::from_value::<Subscribe>(value) {
            Ok(subscribe) if subscribe.well_formed() => self::subscribe(config, cache, conn, &subscribe),
            _ => error_reply(INVALID),
        },
        None => error_reply(INVALID),
    };
    let _ = conn.send_text(&reply);
    Verdict::Drop
}

fn subscribe(config: &Config, cache: &mut HashMap<String, Rc<Compiled>>, conn: &Conn, subscribe: &Subscribe) -> String {
    let compiled = match subscribe.compile() {
        Ok(compiled) => Rc::new(compiled),
        Err(reason) => {
            count("subscriptions_refused", 1.0);
            return subscribe.failure(&reason);
        }
    };
    let mut list = quids(conn);
    let quid = compiled.quid.clone();
    let new = !holds(&list, &quid);
    if new && list.len() >= MAX_QUERIES {
        return subscribe.failure(&format!("this connection holds {MAX_QUERIES} subscriptions already"));
    }
    let now = now_ms();
    let (window, newest) = retention::window(&compiled.metric, &config.retention, now);
    let records = joined(&eval::answer(&compiled.select, &window, now));
    if new {
        let def = serde_json::to_vec(subscribe).expect("plain data serializes");
        list.push((quid.clone(), newest));
        if let Err(e) = conn
            .set_meta(&key("def", &quid), &def)
            .and_then(|()| save_quids(conn, &list))
        {
            return subscribe.failure(&format!("the subscription could not be kept: {e}"));
        }
        if compiled.windowed {
            let _ = conn.set_meta(&key("res", &quid), records.as_bytes());
            arm(conn, &quid, period(config, conn));
        }
    }
    remember(cache, compiled);
    subscribe.success(&quid, &records)
}

fn unsubscribe(conn: &Conn, quid: &str) -> String {
    let mut list = quids(conn);
    let Some(at) = list.iter().position(|(q, _)| q == quid) else {
        return error_reply(&format!("no subscription {quid} on this connection"));
    };
    list.remove(at);
    let _ = save_quids(conn, &list);
    if let Some(timer) = meta_i64(conn, &key("timer", quid)) {
        let _ = conn.cancel_timer(timer as u64);
        let _ = conn.delete_meta(&timer_key(timer));
    }
    for name in ["def", "last", "buf", "timer", "res"] {
        let _ = conn.delete_meta(&key(name, quid));
    }
    format!("{{\"quid\":{},\"unsubscribed\":true}}", json(quid))
}

/// A timer for `quid` in `ms`.
fn arm(conn: &Conn, quid: &str, ms: i64) {
    match conn.set_timer(ms.clamp(0, i64::from(i32::MAX)) as u32) {
        Ok(timer) => {
            let _ = conn.set_meta(&key("timer", quid), timer.to_string().as_bytes());
            let _ = conn.set_meta(&timer_key(timer), quid.as_bytes());
        }
        Err(e) => log(Level::Warn, &format!("no timer for subscription {quid}: {e}")),
    }
}

fn push(conn: &Conn, compiled: &Compiled, records: &str) {
    let text = format!(
        "{{\"quid\":{},\"metric\":{},\"records\":[{records}]}}",
        json(&compiled.quid),
        json(&compiled.metric.name)
    );
    if let Err(e) = conn.send_text(&text) {
        log(Level::Warn, &format!("push for {} not sent: {e}", compiled.quid));
    }
}

/// How a connection's pushes are paced: its refresh_period and how many records may wait per
/// query (both fixed at the upgrade).
struct Pacing {
    period: i64,
    limit: usize,
}

impl Pacing {
    fn of(config: &Config, conn: &Conn) -> Pacing {
        Pacing {
            period: period(config, conn),
            limit: retention_size(config, conn).max(0) as usize,
        }
    }
}

/// A subscription's matching records of one delivery, in order: pushed now if the last push is
/// a period old, else kept for the next.
fn enqueue(pacing: &Pacing, conn: &Conn, compiled: &Compiled, records: &[&str], now: i64) {
    let quid = &compiled.quid;
    let Pacing { period, limit } = *pacing;
    let waiting = conn.meta(&key("timer", quid)).is_some();
    let last = meta_i64(conn, &key("last", quid));
    if !waiting && last.is_none_or(|last| now - last >= period) {
        push(conn, compiled, &records.join(","));
        let _ = conn.set_meta(&key("last", quid), now.to_string().as_bytes());
        return;
    }
    let buffer = conn.meta_str(&key("buf", quid)).unwrap_or_default();
    let mut kept: VecDeque<&str> = buffer.lines().collect();
    kept.extend(records);
    // The slowest client may not hold more than retention_size: the oldest go.
    if kept.len() > limit {
        count("records_dropped", (kept.len() - limit) as f64);
        kept.drain(..kept.len() - limit);
    }
    let kept: Vec<&str> = kept.into();
    let _ = conn.set_meta(&key("buf", quid), kept.join("\n").as_bytes());
    if !waiting {
        arm(conn, quid, last.map_or(0, |last| last + period - now));
    }
}

/// The metric and record of each envelope a delivery carries (one, or one per line as the
/// insert route batches them), with its number if this process kept it (only then can it have
/// been in a first answer: record numbers are this process's); or the one record the route's
/// `map` reads from another source's message.
fn records(config: &Config, payload: &[u8], now: i64) -> Vec<(Metric, Bit, Option<i64>)> {
    let envelopes: Result<Vec<Envelope>, _> = serde_json::Deserializer::from_slice(payload)
        .into_iter::<Envelope>()
        .collect();
    let parsed = match envelopes {
        Ok(envelopes) => {
            let local_origin = match envelopes.iter().any(|e| e.origin.is_some()) {
                true => retention::local_origin(),
                false => None,
            };
            envelopes
                .into_iter()
                .map(|envelope| {
                    let bit = Bit::from_json(&envelope.bit, now)?;
                    let local = envelope.origin.is_some() && envelope.origin == local_origin;
                    let metric = Metric {
                        db: envelope.db,
                        namespace: envelope.namespace,
                        name: envelope.metric,
                    };
                    Ok((metric, bit, local.then_some(envelope.seq)))
                })
                .collect::<Result<Vec<_>, String>>()
        }
        Err(e) => match &config.map {
            Some(map) => map.read(payload, now).map(|(metric, bit)| vec![(metric, bit, None)]),
            None => Err(e.to_string()),
        },
    };
    parsed.unwrap_or_else(|e| {
        log(Level::Debug, &format!("not a record, ignored: {e}"));
        Vec::new()
    })
}

/// A query's matches in a delivery: each record shaped by the query, with its local number.
type Matches = Rc<Vec<(Option<i64>, String)>>;

/// A delivery's records, and each query's matches among them. Every stream connection gets the
/// same bus message and an instance serves many connections in a row, so an instance parses a
/// delivery once and matches each distinct query (quid) once, whichever connections hold it.
pub struct Delivered {
    payload: Vec<u8>,
    at: i64,
    records: Vec<(Metric, Bit, Option<i64>)>,
    /// quid -> the matching records, shaped, with their local record numbers.
    matches: HashMap<String, Matches>,
}

/// How long a parsed delivery may answer for the same payload (conditions may name `now`).
const REUSE_MS: i64 = 1000;
/// Deliveries an instance keeps parsed, so that connections some messages behind still find
/// theirs; and the payload bytes they may hold (parsed, they take about as much again).
const REUSE_COUNT: usize = 64;
const REUSE_BYTES: usize = 4 << 20;

impl Delivered {
    fn matches(&mut self, compiled: &Compiled) -> Matches {
        if let Some(found) = self.matches.get(&compiled.quid) {
            return found.clone();
        }
        let found: Vec<(Option<i64>, String)> = (self.records.iter())
            .filter(|(metric, bit, _)| *metric == compiled.metric && eval::selects(&compiled.select, bit, self.at))
            .map(|(_, bit, seq)| (*seq, eval::shape(&compiled.select, bit).to_json()))
            .collect();
        let found = Rc::new(found);
        self.matches.insert(compiled.quid.clone(), found.clone());
        found
    }
}

/// `a == b`, eight bytes at a time: Wasm's memcmp goes byte by byte, and a delivery is compared
/// whole each time an instance finds it parsed.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word = |chunk: &[u8]| u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    a.len() == b.len()
        && a_words.remainder() == b_words.remainder()
        && a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
}

pub fn delivery(
    config: &Config,
    cache: &mut HashMap<String, Rc<Compiled>>,
    recent: &mut VecDeque<Delivered>,
    conn: &Conn,
    message: &mut Message,
) -> Verdict {
    if let (Some(sub), Some(id)) = (meta_i64(conn, "msg.sub"), conn.meta_str("msg.id")) {
        let _ = conn.ack(sub as u64, &id);
    }
    let list = quids(conn);
    if list.is_empty() {
        return Verdict::Drop;
    }
    let now = now_ms();
    let payload = message.payload();
    recent.retain(|d| config.share_matches && now - d.at < REUSE_MS);
    let delivered = match recent.iter().position(|d| same_bytes(&d.payload, payload)) {
        Some(found) => &mut recent[found],
        None => {
            recent.truncate(REUSE_COUNT - 1);
            let mut bytes = payload.len();
            recent.retain(|d| {
                bytes += d.payload.len();
                bytes <= REUSE_BYTES
            });
            recent.push_front(Delivered {
                payload: payload.to_vec(),
                at: now,
                records: records(config, payload, now),
                matches: HashMap::new(),
            });
            &mut recent[0]
        }
    };
    let pacing = Pacing::of(config, conn);
    for (quid, hw) in &list {
        let Some(compiled) = compiled(cache, conn, quid) else {
            continue;
        };
        if compiled.windowed {
            continue;
        }
        // A record this connection's first answer covered is not pushed again.
        let matches = delivered.matches(&compiled);
        let records: Vec<&str> = (matches.iter())
            .filter(|(seq, _)| !seq.is_some_and(|seq| seq <= *hw))
            .map(|(_, record)| record.as_str())
            .collect();
        if !records.is_empty() {
            enqueue(&pacing, conn, &compiled, &records, now);
        }
    }
    Verdict::Drop
}

pub fn timer(config: &Config, cache: &mut HashMap<String, Rc<Compiled>>, conn: &Conn, timer: u64) {
    let timer_key = timer_key(timer);
    let Some(quid) = conn.meta_str(&timer_key) else {
        return;
    };
    let _ = conn.delete_meta(&timer_key);
    let _ = conn.delete_meta(&key("timer", &quid));
    if !holds(&quids(conn), &quid) {
        return;
    }
    let Some(compiled) = compiled(cache, conn, &quid) else {
        return;
    };
    let now = now_ms();
    if compiled.windowed {
        let (window, _) = retention::window(&compiled.metric, &config.retention, now);
        let records = joined(&eval::answer(&compiled.select, &window, now));
        if conn.meta(&key("res", &quid)).as_deref() != Some(records.as_bytes()) {
            push(conn, &compiled, &records);
            let _ = conn.set_meta(&key("res", &quid), records.as_bytes());
        }
        arm(conn, &quid, period(config, conn));
        return;
    }
    let buffer = conn.meta_str(&key("buf", &quid)).unwrap_or_default();
    if !buffer.is_empty() {
        push(conn, &compiled, &buffer.replace('\n', ","));
        let _ = conn.set_meta(&key("last", &quid), now.to_string().as_bytes());
    }
    let _ = conn.delete_meta(&key("buf", &quid));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subscription(query: &str, extra: &str) -> Subscribe {
        serde_json::from_str(&format!(
            r#"{{"db":"db","namespace":"ns","metric":"m","queryString":{}{extra}}}"#,
            json(query)
        ))
        .unwrap()
    }

    #[test]
    fn same_bytes_is_equality() {
        let text = b"0123456789abcdefghij";
        for (a, b) in [
            (&text[..], &text[..]),
            (&text[..19], &text[..]),
            (&text[..16], &text[4..]),
        ] {
            assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
        }
        let mut other = text.to_vec();
        other[18] = b'!';
        assert!(!same_bytes(text, &other));
        other[18] = text[18];
        other[3] = b'!';
        assert!(!same_bytes(text, &other));
    }

    #[test]
    fn identical_queries_share_a_quid() {
        let a = subscription("select * from m where a = 1", "").compile().unwrap();
        let b = subscription("SELECT *  FROM m WHERE a=1;", "").compile().unwrap();
        let c = subscription("select * from m where a = 2", "").compile().unwrap();
        assert_eq!(a.quid, b.quid);
        assert_ne!(a.quid, c.quid);
        assert_eq!(a.quid.len(), 36);
        assert_eq!(a.quid.matches('-').count(), 4);
    }

    #[test]
    fn filters_and_bounds_join_the_condition() {
        let s = subscription(
            "select * from m where a = 1",
            r#","from":0,"to":100,"filters":[{"dimension":"b","value":"x$","operator":" Like "},{"dimension":"c","operator":"is not null"},{"dimension":"d","value":2.5,"operator":">="}]"#,
        );
        assert!(s.well_formed());
        let compiled = s.compile().unwrap();
        let condition = compiled.select.condition.unwrap();
        let bit = |json: &str| Bit::from_json(&serde_json::from_str(json).unwrap(), 0).unwrap();
        assert!(eval::matches(
            &condition,
            &bit(r#"{"timestamp":50,"value":1,"dimensions":{"a":1,"b":"xy","c":0,"d":3}}"#),
            0
        ));
        assert!(!eval::matches(
            &condition,
            &bit(r#"{"timestamp":150,"value":1,"dimensions":{"a":1,"b":"xy","c":0,"d":3}}"#),
            0
        ));
        assert!(!eval::matches(
            &condition,
            &bit(r#"{"timestamp":50,"value":1,"dimensions":{"a":1,"b":"xy","d":3}}"#),
            0
        ));
        assert!(
            !subscription(
                "select * from m",
                r#","filters":[{"dimension":"b","value":1,"operator":"!="}]"#
            )
            .well_formed()
        );
        assert!(!subscription("select * from m", r#","filters":[{"dimension":"b","operator":"="}]"#).well_formed());
    }

    #[test]
    fn names_and_filters_are_bounded() {
        let filters = |n: usize, dimension: &str, value: &str| {
            let one = json!({"dimension": dimension, "value": value, "operator": "="});
            format!(r#","filters":{}"#, Value::Array(vec![one; n]))
        };
        let reason = |extra: &str| subscription("select * from m", extra).compile().unwrap_err();
        assert!(
            subscription("select * from m", &filters(MAX_FILTERS, "d", "v"))
                .compile()
                .is_ok()
        );
        assert_eq!(reason(&filters(MAX_FILTERS + 1, "d", "v")), "more than 64 filters");
        assert_eq!(
            reason(&filters(1, &"d".repeat(257), "v")),
            "a filter's dimension: a name longer than 256 bytes"
        );
        assert_eq!(
            reason(&filters(1, "d", &"v".repeat(1025))),
            "a filter's value: a value longer than 1024 bytes"
        );
        let mut long = subscription("select * from m", "");
        long.db = "d".repeat(257);
        assert_eq!(
            long.compile().unwrap_err(),
            "db, namespace or metric longer than 256 bytes"
        );
    }

    #[test]
    fn failures_and_answers_have_nsdb_keys() {
        let s = subscription("select * from other", "");
        assert_eq!(
            s.failure(&s.compile().unwrap_err()),
            r#"{"db":"db","namespace":"ns","metric":"m","queryString":"select * from other","reason":"the query reads metric other but the subscription names metric m"}"#
        );
        assert_eq!(
            s.success("q", "{}"),
            r#"{"db":"db","namespace":"ns","metric":"m","queryString":"select * from other","quid":"q","records":[{}]}"#
        );
    }
}
