//! The `hydra` filter: Hydra's WebSocket ingestion protocol (docs/filters/hydra.md). It owns
//! the protocol only: the `-c SET` / `-c HELP` commands, request metadata (`hydra-*` request
//! headers at the upgrade, then SET), request ids, validation, and one answer per payload
//! listing each ingestor's outcome. Ingestors are sinks of the route, named in the filter's
//! config; the sinks decide where records go (`{meta.hydra-kafka-topic}` templates).
//!
//! Every piece of state is connection metadata, so any instance serves any connection and a hot
//! swap keeps it: the `hydra-*` keys (what the client set; sinks see them), `hydra.order` (the
//! names in the order set), `hydra.seq` (requests so far), `hydra.req.SEQ` (a request waiting
//! for its brokers, JSON) and `hydra.timer` (the connection's one timer, set for the earliest
//! deadline of its requests).
//!
//! Under `hydra-ack = explicit` (or `replicated`, `persisted`) a request is answered once every
//! ingestor's sink confirmed or failed (`fg_on_result`), or when `hydra-ingest-timeout` passes
//! (408); otherwise as soon as the records are queued. Answers go out in completion order, each
//! with its request id.

use std::collections::BTreeMap;

use framegate_guest::{Conn, Error, Filter, Level, Message, Opcode, Open, Record, SinkResult, Verdict, export_filter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The filter's config on the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Ingestor name -> the sink it writes to.
    ingestors: BTreeMap<String, Ingestor>,
    /// Milliseconds to wait for the brokers before answering 408, unless `hydra-ingest-timeout` says.
    #[serde(default = "default_timeout")]
    ingest_timeout_ms: u32,
    /// A payload over this answers 413 and the connection stays open.
    #[serde(default = "default_max_payload")]
    max_payload_bytes: usize,
    /// The shapes of the replies: the seed document's (default) or current Hydra's.
    #[serde(default)]
    replies: Replies,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Replies {
    /// `{"status":N,"message":M}`; `{"requestId":..,"status":{..},"ingestors":{..}}`.
    #[default]
    Seed,
    /// `{"message":M,"status":N}`; `{"correlationId":..,"ingestors":{..}}`.
    Current,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ingestor {
    /// A sink of the route.
    sink: Option<String>,
    /// Metadata name -> sink, in place of `sink`: the ingestor joins when one of the names is
    /// set and writes to its sink (Hydra's RabbitMQ ingestor: an exchange or a queue).
    #[serde(default)]
    sink_by: BTreeMap<String, String>,
    /// Metadata the ingestor needs (e.g. `hydra-kafka-topic`): without it, it does not join.
    #[serde(default)]
    requires: Vec<String>,
}

impl Ingestor {
    /// The sink a request goes to, or why the ingestor does not join it.
    fn sink(&self, conn: &Conn) -> Result<&str, String> {
        if let Some(needed) = self.requires.iter().find(|r| conn.meta(r).is_none()) {
            return Err(needed.clone());
        }
        match &self.sink {
            Some(sink) => Ok(sink),
            None => (self.sink_by.iter())
                .find(|(name, _)| conn.meta(name).is_some())
                .map(|(_, sink)| sink.as_str())
                .ok_or_else(|| self.sink_by.keys().cloned().collect::<Vec<_>>().join(" or ")),
        }
    }
}

impl Config {
    /// Why the config cannot serve a route with these sinks: an ingestor names a sink the
    /// route does not have (every payload would get 500 at run time).
    fn missing_sink(&self, sinks: &[String]) -> Result<(), String> {
        for (name, ingestor) in &self.ingestors {
            let named = (ingestor.sink.iter().map(|sink| ("sink".to_string(), sink))).chain(
                ingestor
                    .sink_by
                    .iter()
                    .map(|(by, sink)| (format!("sink_by.{by}"), sink)),
            );
            for (key, sink) in named {
                if !sinks.contains(sink) {
                    return Err(format!(
                        "hydra config: ingestors.{name}.{key}: no sink {sink:?} on this route (its sinks: {})",
                        if sinks.is_empty() {
                            "none".to_string()
                        } else {
                            sinks.join(", ")
                        }
                    ));
                }
            }
        }
        Ok(())
    }
}

fn default_timeout() -> u32 {
    3000
}
/// Below the route's default `max_message_size` (1 MiB), which closes the connection.
fn default_max_payload() -> usize {
    512 << 10
}

/// Why a request fails when the connection's metadata cannot hold its bookkeeping.
const METADATA_FULL: &str = "Too much in flight: this connection's metadata is full.";

/// Names the filter reads itself; every other `hydra-*` name travels to the sinks as a header.
const CONSUMED: [&str; 6] = [
    "hydra-ack",
    "hydra-validation",
    "hydra-ingest-timeout",
    "hydra-response-format",
    "hydra-record-key",
    "hydra-ingestor",
];
const ORDER: &str = "hydra.order";
const SEQ: &str = "hydra.seq";
const BAD_MESSAGE: &str = "BAD_REQUEST:Not a valid message. Use 'HELP' for help.";
const HELP: &str = "Commands: '-c SET name = value' sets request metadata (hydra-kafka-topic, hydra-record-key, \
hydra-ack, hydra-validation, hydra-ingest-timeout, hydra-client-id, hydra-response-format, hydra-ingestor, \
hydra-rabbit-exchange, hydra-rabbit-queue, or any hydra-* name); '-c SET' lists it; '-c HELP' shows this. \
Any other message is a payload to ingest, optionally prefixed by '-i ID '.";

/// An outcome: HTTP-like code, message, and milliseconds taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome(u16, String, i64);

fn ok(ms: i64) -> Outcome {
    Outcome(200, "OK".into(), ms)
}

/// A request waiting for its brokers, kept in `hydra.req.SEQ`.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    id: String,
    start: i64,
    /// When the request is answered 408 if its brokers have not all answered (ms).
    #[serde(default)]
    deadline: i64,
    detailed: bool,
    waiting: Vec<String>,
    done: BTreeMap<String, Outcome>,
}

#[derive(Default)]
struct Hydra {
    config: Option<Config>,
}

fn json(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialize")
}

fn command_reply(replies: Replies, status: u16, message: &str) -> String {
    match replies {
        Replies::Seed => format!("{{\"status\":{status},\"message\":{}}}", json(message)),
        Replies::Current => format!("{{\"message\":{},\"status\":{status}}}", json(message)),
    }
}

/// The reason phrase of a code, as Hydra's top-level status gives it.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

/// The answer to a payload. The top-level status is Hydra's: the code of the first failing
/// ingestor (by name) with its reason phrase, or 200 OK; the ingestors carry the reasons.
fn ingest_reply(
    replies: Replies,
    id: &str,
    status: Option<(u16, &str)>,
    outcomes: &BTreeMap<String, Outcome>,
    detailed: bool,
) -> String {
    let failure = outcomes.values().find(|o| o.0 != 200).map(|o| (o.0, reason(o.0)));
    let (code, message) = status.or(failure).unwrap_or((200, "OK"));
    let ingestors: Vec<String> = outcomes
        .iter()
        .map(|(name, Outcome(code, message, ms))| {
            let timing = if detailed {
                format!(",\"durationMs\":{ms}")
            } else {
                String::new()
            };
            format!(
                "{}:{{\"code\":{code},\"message\":{}{timing}}}",
                json(name),
                json(message)
            )
        })
        .collect();
    match replies {
        Replies::Seed => format!(
            "{{\"requestId\":{},\"status\":{{\"code\":{code},\"message\":{}}},\"ingestors\":{{{}}}}}",
            json(id),
            json(message),
            ingestors.join(",")
        ),
        Replies::Current => format!(
            "{{\"correlationId\":{},\"ingestors\":{{{}}}}}",
            json(id),
            ingestors.join(",")
        ),
    }
}

/// 8 alphanumerics, unique per connection: the request number through a bijection of 62^8,
/// offset by the connection, so ids look unrelated and never repeat on one connection.
fn request_id(conn: u64, seq: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const SPACE: u128 = 62u128.pow(8);
    // Odd and not a multiple of 31: coprime with 62^8, so `seq -> seq * STEP` is a bijection.
    const STEP: u128 = 3_141_592_653_589;
    let offset = u128::from(conn).wrapping_mul(0x9E37_79B9_7F4A_7C15) % SPACE;
    let mut n = (u128::from(seq) * STEP + offset) % SPACE;
    let mut id = [0u8; 8];
    for byte in id.iter_mut().rev() {
        *byte = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(id.to_vec()).expect("ASCII")
}

/// `{$.a.b[0]}`: a path into the payload; `None` when the key is a literal.
fn key_path(key: &str) -> Option<Result<Vec<PathStep>, ()>> {
    let inner = key.strip_prefix("{$")?;
    let Some(path) = inner.strip_suffix('}') else {
        return Some(Err(()));
    };
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Some(Err(()));
            }
            steps.push(PathStep::Field(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else {
                return Some(Err(()));
            };
            let Ok(index) = after[..end].parse() else {
                return Some(Err(()));
            };
            steps.push(PathStep::Index(index));
            rest = &after[end + 1..];
        } else {
            return Some(Err(()));
        }
    }
    Some(if steps.is_empty() { Err(()) } else { Ok(steps) })
}

enum PathStep {
    Field(String),
    Index(usize),
}

/// The record key a payload gets from `hydra-record-key`: the literal, or what its path finds.
fn record_key(key: &str, payload: Option<&Value>) -> Result<Vec<u8>, String> {
    let Some(path) = key_path(key) else {
        return Ok(key.as_bytes().to_vec());
    };
    let path = path.map_err(|()| format!("hydra-record-key {key} is not a valid path."))?;
    let mut value = payload.ok_or_else(|| format!("hydra-record-key {key} needs a JSON payload."))?;
    for step in &path {
        value = match step {
            PathStep::Field(name) => value.get(name.as_str()),
            PathStep::Index(i) => value.get(*i),
        }
        .ok_or_else(|| format!("hydra-record-key {key}: not found in the payload."))?;
    }
    Ok(match value {
        Value::String(s) => s.clone().into_bytes(),
        Value::Null => return Err(format!("hydra-record-key {key}: null in the payload.")),
        other => other.to_string().into_bytes(),
    })
}

impl Hydra {
    fn config(&self) -> &Config {
        self.config.as_ref().expect("fg_init ran")
    }

    /// Checks and stores one metadata value (empty removes it); `Err` is the 400 message.
    fn set(&self, conn: &Conn, name: &str, value: &str) -> Result<(), String> {
        let bad = |why: &str| Err(format!("BAD REQUEST[{name}={value}] {why}"));
        if !name.starts_with("hydra-") || name.len() == "hydra-".len() {
            return bad("is not a hydra-* name.");
        }
        let lower = value.to_ascii_lowercase();
        if !value.is_empty() {
            match name {
                "hydra-ack" if !["none", "noack", "explicit", "replicated", "persisted"].contains(&lower.as_str()) => {
                    return bad("is not a valid ack strategy.");
                }
                "hydra-validation" if !["strict", "relaxed"].contains(&lower.as_str()) => {
                    return bad("is not a valid validation: use strict or relaxed.");
                }
                "hydra-response-format" if !["simple", "detailed"].contains(&lower.as_str()) => {
                    return bad("is not a valid response format: use simple or detailed.");
                }
                "hydra-ingest-timeout" if !value.parse::<u32>().is_ok_and(|ms| (1..=600_000).contains(&ms)) => {
                    return bad("is not a valid timeout: milliseconds from 1 to 600000.");
                }
                "hydra-kafka-topic"
                    if value.len() > 249
                        || value == "."
                        || value == ".."
                        || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
                {
                    return bad("is not a valid Kafka topic name.");
                }
                "hydra-record-key" if matches!(key_path(value), Some(Err(()))) => {
                    return bad("is not a valid record key: use a literal or a path such as {$.user.id}.");
                }
                "hydra-ingestor" if !self.config().ingestors.contains_key(value) => {
                    return bad("is not a configured ingestor.");
                }
                "hydra-rabbit-exchange" if conn.meta("hydra-rabbit-queue").is_some() => {
                    return bad("A single parameter for exchange or queue is required.");
                }
                "hydra-rabbit-queue" if conn.meta("hydra-rabbit-exchange").is_some() => {
                    return bad("A single parameter for exchange or queue is required.");
                }
                _ => {}
            }
        }
        let mut order: Vec<String> = conn
            .meta_str(ORDER)
            .unwrap_or_default()
            .lines()
            .filter(|n| *n != name)
            .map(str::to_string)
            .collect();
        let previous = conn.meta(name);
        let stored = if value.is_empty() {
            conn.delete_meta(name)
        } else {
            order.push(name.to_string());
            conn.set_meta(name, value.as_bytes())
        };
        let listed = stored.and_then(|()| conn.set_meta(ORDER, order.join("\n").as_bytes()));
        match listed {
            Ok(()) => Ok(()),
            Err(e) => {
                // The value went in but the list of names did not: as if nothing happened.
                let _ = match previous {
                    Some(previous) => conn.set_meta(name, &previous),
                    None => conn.delete_meta(name),
                };
                Err(match e {
                    // The value is not echoed: it may be what is too large.
                    Error::Limit => format!(
                        "BAD REQUEST[{name}] could not be stored: this connection's metadata is full \
                         (the route's max_meta_keys or max_meta_bytes)."
                    ),
                    other => format!("BAD REQUEST[{name}={value}] could not be stored: {other}"),
                })
            }
        }
    }

    fn command(&self, conn: &Conn, text: &str) -> String {
        let words = text.trim();
        let (command, rest) = words.split_once(char::is_whitespace).unwrap_or((words, ""));
        let rest = rest.trim();
        if command.eq_ignore_ascii_case("help") && rest.is_empty() {
            return command_reply(self.config().replies, 200, HELP);
        }
        if !command.eq_ignore_ascii_case("set") {
            return command_reply(self.config().replies, 400, BAD_MESSAGE);
        }
        if rest.is_empty() {
            let listing: Vec<String> = conn
                .meta_str(ORDER)
                .unwrap_or_default()
                .lines()
                .filter_map(|name| Some(format!("{} -> {}", name.to_ascii_uppercase(), conn.meta_str(name)?)))
                .collect();
            return command_reply(self.config().replies, 200, &listing.join(";"));
        }
        let Some((name, value)) = rest.split_once('=') else {
            return command_reply(self.config().replies, 400, BAD_MESSAGE);
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match self.set(conn, &name, value) {
            Ok(()) => command_reply(
                self.config().replies,
                200,
                &format!("OK[{}={value}]", name.to_ascii_uppercase()),
            ),
            Err(message) => command_reply(self.config().replies, 400, &message),
        }
    }

    /// `-i ID payload`: the id and the payload; `None` when the prefix is malformed.
    fn split_id(text: &str) -> Option<(Option<&str>, &str)> {
        let Some(rest) = text.strip_prefix("-i") else {
            return Some((None, text));
        };
        let rest = rest.strip_prefix(char::is_whitespace)?.trim_start();
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let (id, payload) = rest.split_at(end);
        let payload = payload.strip_prefix(char::is_whitespace)?;
        (!id.is_empty()).then_some((Some(id), payload.trim_start()))
    }

    fn ingest(&self, conn: &Conn, text: &str) -> Option<String> {
        let Some((given, payload)) = Self::split_id(text) else {
            return Some(command_reply(self.config().replies, 400, BAD_MESSAGE));
        };
        let seq = conn.meta_str(SEQ).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1;
        let id = given.map_or_else(|| request_id(conn.id(), seq), str::to_string);
        if conn.set_meta(SEQ, seq.to_string().as_bytes()).is_err() {
            let why = Some((503, METADATA_FULL));
            return Some(ingest_reply(self.config().replies, &id, why, &BTreeMap::new(), false));
        }
        let meta = |name: &str| conn.meta_str(name).map(|v| v.to_ascii_lowercase());
        let detailed = meta("hydra-response-format").as_deref() == Some("detailed");
        let start = framegate_guest::now_ms();

        // Who joins: the path's ingestor, else `hydra-ingestor`, else all; each if its metadata is set.
        let config = self.config();
        let chosen = conn
            .meta_str("path.ingestor")
            .or_else(|| conn.meta_str("hydra-ingestor"));
        let mut joined = Vec::new();
        let mut missing = Vec::new();
        for (name, ingestor) in &config.ingestors {
            if chosen.as_ref().is_some_and(|c| c != name) {
                continue;
            }
            match ingestor.sink(conn) {
                Ok(sink) => joined.push((name.clone(), sink.to_string())),
                Err(needed) => missing.push(format!("{name} needs {needed}")),
            }
        }
        let mut outcomes = BTreeMap::new();
        if joined.is_empty() {
            let why = format!("No ingestor joined the request: {}.", missing.join("; "));
            return Some(ingest_reply(
                self.config().replies,
                &id,
                Some((404, &why)),
                &outcomes,
                detailed,
            ));
        }
        let fail_all = |outcomes: &mut BTreeMap<String, Outcome>, code: u16, why: String| {
            for (name, _) in &joined {
                outcomes.insert(name.clone(), Outcome(code, why.clone(), 0));
            }
            Some(ingest_reply(self.config().replies, &id, None, outcomes, detailed))
        };

        // Checks that hold for every ingestor: size, validation, the record key.
        if payload.len() > config.max_payload_bytes {
            let why = format!(
                "Payload of {} bytes is over the limit of {} bytes.",
                payload.len(),
                config.max_payload_bytes
            );
            return fail_all(&mut outcomes, 413, why);
        }
        let relaxed = meta("hydra-validation").as_deref() == Some("relaxed");
        let key_spec = conn.meta_str("hydra-record-key");
        let parsed = if relaxed && key_spec.as_deref().is_none_or(|k| key_path(k).is_none()) {
            None
        } else {
            match serde_json::from_str::<Value>(payload) {
                Ok(value) if relaxed || value.is_object() => Some(value),
                Ok(_) => return fail_all(&mut outcomes, 400, "The payload must be a JSON object.".into()),
                Err(e) if relaxed => return fail_all(&mut outcomes, 400, format!("hydra-record-key needs JSON: {e}.")),
                Err(e) => return fail_all(&mut outcomes, 400, format!("Invalid JSON: {e}.")),
            }
        };
        let key = match key_spec.as_deref().map(|k| record_key(k, parsed.as_ref())).transpose() {
            Ok(key) => key,
            Err(why) => return fail_all(&mut outcomes, 400, why),
        };

        let names = conn.meta_keys("hydra-");
        let values: Vec<(String, Vec<u8>)> = names
            .into_iter()
            .filter(|n| !CONSUMED.contains(&n.as_str()))
            .filter_map(|n| conn.meta(&n).map(|v| (n, v)))
            .collect();
        let headers: Vec<(&str, &[u8])> = values.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let explicit = matches!(
            meta("hydra-ack").as_deref(),
            Some("explicit" | "replicated" | "persisted")
        );
        if explicit {
            // Room for the answer is made before anything is emitted: a request that cannot be
            // followed is refused with nothing sent, never answered failed for records that go.
            let timeout = conn
                .meta_str("hydra-ingest-timeout")
                .and_then(|t| t.parse().ok())
                .unwrap_or(config.ingest_timeout_ms);
            if let Err(e) = arm(conn, start + i64::from(timeout), start) {
                let why = format!("No timer for the request: {e}.");
                return fail_all(&mut outcomes, 503, why);
            }
            let pending = Pending {
                id: id.clone(),
                start,
                deadline: start + i64::from(timeout),
                detailed,
                waiting: joined.iter().map(|(name, _)| name.clone()).collect(),
                done: BTreeMap::new(),
            };
            if save(conn, seq, &pending).is_err() {
                return fail_all(&mut outcomes, 503, METADATA_FULL.into());
            }
        }
        let mut refused = Vec::new();
        for (name, sink) in &joined {
            let context = if explicit {
                format!("{seq} {name}")
            } else {
                String::new()
            };
            let record = Record {
                key: key.as_deref(),
                headers: &headers,
                context: context.as_bytes(),
            };
            match conn.emit_with(sink, payload.as_bytes(), record) {
                Ok(_) if explicit => {}
                Ok(_) => drop(outcomes.insert(name.clone(), ok(0))),
                Err(e) => {
                    let outcome = match e {
                        Error::TooLarge => Outcome(413, "Payload too large for the route.".into(), 0),
                        Error::UnknownTarget => Outcome(500, format!("Sink {sink} is not on this route."), 0),
                        other => Outcome(500, format!("Sink {sink} refused the record: {other}."), 0),
                    };
                    refused.push((name.clone(), outcome));
                }
            }
        }
        if !explicit {
            outcomes.extend(refused);
            return Some(ingest_reply(self.config().replies, &id, None, &outcomes, detailed));
        }
        // Ingestors whose sink refused the record at once are done already.
        let mut pending = load(conn, seq)?;
        for (name, outcome) in refused {
            pending.waiting.retain(|w| *w != name);
            pending.done.insert(name, outcome);
        }
        if pending.waiting.is_empty() {
            let _ = conn.delete_meta(&format!("hydra.req.{seq}"));
            return Some(ingest_reply(config.replies, &id, None, &pending.done, detailed));
        }
        // Not kept: the ingestors refused at once are answered at the deadline, with the others.
        let _ = save(conn, seq, &pending);
        None
    }

    /// Answers a request whose last ingestor finished, and forgets it.
    fn finish(&self, conn: &Conn, seq: u64, pending: &Pending) {
        let _ = conn.send_text(&ingest_reply(
            self.config().replies,
            &pending.id,
            None,
            &pending.done,
            pending.detailed,
        ));
        let _ = conn.delete_meta(&format!("hydra.req.{seq}"));
    }
}

/// The connection's one timer for its requests' deadlines, kept in metadata: `ID DEADLINE_MS`.
const TIMER: &str = "hydra.timer";

/// The connection's timer, if one is set: its id and the deadline it fires at.
fn armed(conn: &Conn) -> Option<(u64, i64)> {
    let text = conn.meta_str(TIMER)?;
    let (id, at) = text.split_once(' ')?;
    Some((id.parse().ok()?, at.parse().ok()?))
}

/// Makes the connection's one timer fire by `deadline`: however many requests wait, they hold
/// one timer, set for the earliest of their deadlines.
fn arm(conn: &Conn, deadline: i64, now: i64) -> Result<(), Error> {
    let current = armed(conn);
    if current.is_some_and(|(_, at)| at <= deadline) {
        return Ok(());
    }
    let timer = conn.set_timer((deadline - now).clamp(0, i64::from(u32::MAX)) as u32)?;
    if let Err(e) = conn.set_meta(TIMER, format!("{timer} {deadline}").as_bytes()) {
        let _ = conn.cancel_timer(timer);
        return Err(e);
    }
    if let Some((old, _)) = current {
        let _ = conn.cancel_timer(old);
    }
    Ok(())
}

fn save(conn: &Conn, seq: u64, pending: &Pending) -> Result<(), Error> {
    let state = serde_json::to_vec(pending).expect("plain data serializes");
    conn.set_meta(&format!("hydra.req.{seq}"), &state)
}

fn load(conn: &Conn, seq: u64) -> Option<Pending> {
    serde_json::from_slice(&conn.meta(&format!("hydra.req.{seq}"))?).ok()
}

impl Filter for Hydra {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let config: Config = serde_json::from_slice(config).map_err(|e| format!("hydra config: {e}"))?;
        if config.ingestors.is_empty() {
            return Err("hydra config: ingestors is empty; name at least one (ingestor = { sink = \"NAME\" })".into());
        }
        for (name, ingestor) in &config.ingestors {
            let names = (ingestor.requires.iter().map(|n| ("requires", n)))
                .chain(ingestor.sink_by.keys().map(|n| ("sink_by", n)));
            if let Some((key, bad)) = names.into_iter().find(|(_, n)| !n.starts_with("hydra-")) {
                return Err(format!(
                    "hydra config: ingestors.{name}.{key}: {bad:?} is not a hydra-* name"
                ));
            }
            if ingestor.sink.is_some() != ingestor.sink_by.is_empty() {
                return Err(format!(
                    "hydra config: ingestors.{name}: give it either sink = \"NAME\" or sink_by = {{ hydra-NAME = \"SINK\", ... }}"
                ));
            }
        }
        config.missing_sink(&framegate_guest::sink_names())?;
        self.config = Some(config);
        Ok(())
    }

    fn on_open(&mut self, conn: &Conn) -> Open {
        if let Some(name) = conn.meta_str("path.ingestor")
            && !self.config().ingestors.contains_key(&name)
        {
            let _ = conn.reject(
                404,
                command_reply(self.config().replies, 404, &format!("Ingestor {name} not found.")).as_bytes(),
            );
            return Open::Reject;
        }
        for header in conn.meta_keys("header.hydra-") {
            let name = &header["header.".len()..];
            let value = conn.meta_str(&header).unwrap_or_default();
            if let Err(message) = self.set(conn, name, value.trim()) {
                let _ = conn.reject(400, command_reply(self.config().replies, 400, &message).as_bytes());
                return Open::Reject;
            }
        }
        Open::Accept
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        if !message.from_client() {
            return Verdict::Continue;
        }
        let reply = match (message.opcode(), message.text()) {
            (Opcode::Text, Some(text)) => match text.strip_prefix("-c") {
                Some(command) if command.is_empty() || command.starts_with(char::is_whitespace) => {
                    Some(self.command(conn, command))
                }
                _ => {
                    let text = text.to_string();
                    self.ingest(conn, &text)
                }
            },
            _ => Some(command_reply(
                self.config().replies,
                400,
                "Binary messages are not supported.",
            )),
        };
        if let Some(reply) = reply {
            let _ = conn.send_text(&reply);
        }
        Verdict::Drop
    }

    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        let context = String::from_utf8_lossy(&result.context);
        let Some((seq, name)) = context.split_once(' ') else {
            return; // `hydra-ack = none`: answered already
        };
        let Ok(seq) = seq.parse() else { return };
        // Gone: answered by the timeout already.
        let Some(mut pending) = load(conn, seq) else { return };
        let ms = framegate_guest::now_ms() - pending.start;
        let outcome = if result.ok {
            ok(ms)
        } else {
            let why = String::from_utf8_lossy(&result.detail);
            Outcome(
                503,
                if why.is_empty() {
                    "Unknown error.".into()
                } else {
                    why.into_owned()
                },
                ms,
            )
        };
        pending.waiting.retain(|w| w != name);
        pending.done.insert(name.to_string(), outcome);
        if pending.waiting.is_empty() {
            self.finish(conn, seq, &pending);
        } else {
            // Not kept (the connection's metadata is full): the timeout answers the request.
            let _ = save(conn, seq, &pending);
        }
    }

    /// The connection's timer: every request past its deadline is answered 408 (its records
    /// may still be stored: 408 says the brokers did not confirm in time), and the timer is set
    /// again for the earliest deadline left.
    fn on_timer(&mut self, conn: &Conn, timer: u64) {
        if armed(conn).is_none_or(|(id, _)| id != timer) {
            return;
        }
        let _ = conn.delete_meta(TIMER);
        let now = framegate_guest::now_ms();
        let mut next = None::<i64>;
        for key in conn.meta_keys("hydra.req.") {
            let Some(seq) = key["hydra.req.".len()..].parse().ok() else {
                continue;
            };
            let Some(mut pending) = load(conn, seq) else { continue };
            if pending.deadline > now {
                next = Some(next.map_or(pending.deadline, |n| n.min(pending.deadline)));
                continue;
            }
            let ms = now - pending.start;
            for name in std::mem::take(&mut pending.waiting) {
                pending.done.insert(name, Outcome(408, "Request Timeout".into(), ms));
            }
            framegate_guest::log(Level::Debug, &format!("request {} timed out", pending.id));
            self.finish(conn, seq, &pending);
        }
        if let Some(deadline) = next
            && let Err(e) = arm(conn, deadline, now)
        {
            // Their results still answer them; only their deadline is lost.
            framegate_guest::log(Level::Warn, &format!("no timer for the requests in flight: {e}"));
        }
    }
}

export_filter!(Hydra);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_alphanumerics() {
        let ids: std::collections::HashSet<String> = (1..=10_000).map(|seq| request_id(7, seq)).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        );
        assert_ne!(request_id(7, 1), request_id(8, 1));
    }

    #[test]
    fn every_ingestor_names_a_sink_of_the_route() {
        let config: Config = serde_json::from_str(
            r#"{"ingestors": {"file": {"sink": "out"}, "rabbit": {"sink_by": {"hydra-rabbit-queue": "q"}}}}"#,
        )
        .unwrap();
        let sinks = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(config.missing_sink(&sinks(&["q", "out", "other"])), Ok(()));
        assert_eq!(
            config.missing_sink(&sinks(&["q"])).unwrap_err(),
            r#"hydra config: ingestors.file.sink: no sink "out" on this route (its sinks: q)"#
        );
        assert_eq!(
            config.missing_sink(&sinks(&["out"])).unwrap_err(),
            r#"hydra config: ingestors.rabbit.sink_by.hydra-rabbit-queue: no sink "q" on this route (its sinks: out)"#
        );
        assert!(config.missing_sink(&[]).unwrap_err().ends_with("(its sinks: none)"));
    }

    #[test]
    fn record_keys() {
        let payload: Value = serde_json::from_str(r#"{"user":{"id":42,"tags":["a","b"]},"name":"x"}"#).unwrap();
        assert_eq!(record_key("fixed", None).unwrap(), b"fixed");
        assert_eq!(record_key("{$.name}", Some(&payload)).unwrap(), b"x");
        assert_eq!(record_key("{$.user.id}", Some(&payload)).unwrap(), b"42");
        assert_eq!(record_key("{$.user.tags[1]}", Some(&payload)).unwrap(), b"b");
        assert!(
            record_key("{$.nope}", Some(&payload))
                .unwrap_err()
                .contains("not found")
        );
        assert!(matches!(key_path("{$.}"), Some(Err(()))));
        assert!(matches!(key_path("{$.a"), Some(Err(()))));
    }

    #[test]
    fn reply_shapes() {
        let mut outcomes = BTreeMap::new();
        outcomes.insert("kafka_ingestor".to_string(), ok(3));
        assert_eq!(
            ingest_reply(Replies::Seed, "GrnuqJBX", None, &outcomes, false),
            r#"{"requestId":"GrnuqJBX","status":{"code":200,"message":"OK"},"ingestors":{"kafka_ingestor":{"code":200,"message":"OK"}}}"#
        );
        outcomes.insert("b".to_string(), Outcome(503, "down".into(), 5));
        assert_eq!(
            ingest_reply(Replies::Seed, "1", None, &outcomes, true),
            r#"{"requestId":"1","status":{"code":503,"message":"Service Unavailable"},"ingestors":{"b":{"code":503,"message":"down","durationMs":5},"kafka_ingestor":{"code":200,"message":"OK","durationMs":3}}}"#
        );
        assert_eq!(
            ingest_reply(Replies::Current, "0", None, &outcomes, false),
            r#"{"correlationId":"0","ingestors":{"b":{"code":503,"message":"down"},"kafka_ingestor":{"code":200,"message":"OK"}}}"#
        );
        assert_eq!(
            command_reply(Replies::Current, 200, "OK"),
            r#"{"message":"OK","status":200}"#
        );
        assert_eq!(Hydra::split_id("-i 122 {\"a\":1}"), Some((Some("122"), "{\"a\":1}")));
        assert_eq!(Hydra::split_id("{}"), Some((None, "{}")));
        assert_eq!(Hydra::split_id("-i {}"), None);
    }
}
