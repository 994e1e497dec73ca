//! `framegate replay`: runs one filter module, or a route's chain, outside the proxy against a
//! session file, on a virtual clock, and lists what the filters did (docs/replay.md). It drives
//! the proxy's own filter host (chain, slots, ABI) and does the session's bookkeeping (tickets,
//! timers, subscriptions) the way src/session/ does; `expect` compares, `fixtures` gates swaps.

pub mod expect;
pub mod fixtures;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::{FilterRef, FiltersConfig, RouteConfig};
use crate::filter::abi::{ConnState, Effect, Journal};
use crate::filter::transcript::{self, Line};
use crate::filter::{Chain, ChainEffect, FilterHost, HookCall, Verdict};
use crate::metrics::Metrics;
use crate::session::request::{RequestInfo, from_request};
use crate::types::{DeliveryError, MessageId, MessageMeta, MetaLimit, Opcode};

/// What `now_ms` answers at the open when the session does not say: 2026-01-01T00:00:00Z.
const DEFAULT_CLOCK_MS: i64 = 1_767_225_600_000;
/// A module alone gets this message size limit unless the session says.
const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// A module alone gets this deadline per call: generous, a replay is no benchmark.
const MODULE_TIMEOUT_MS: u64 = 1_000;
/// Timers one event may fire (a timer that sets a 0 ms timer each time would never end).
const MAX_FIRINGS: usize = 10_000;

/// What a session is replayed against.
pub enum Subject {
    /// `dir/NAME.wasm` (or `.wat`) alone; its config, sinks and sources come from the open event.
    Module { dir: PathBuf, name: String },
    /// A route's chain from a config: its filters, sinks, limits; `sources` the config's.
    Route {
        dir: PathBuf,
        name: String,
        route: Box<RouteConfig>,
        sources: Arc<[String]>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("session line {line}: {message}")]
    Session { line: usize, message: String },
    #[error("{0}")]
    Load(String),
}

/// What a replay found: the effects in order, and the kind of each session line (for diffs).
#[derive(Debug, Default)]
pub struct Replayed {
    pub effects: Vec<Value>,
    pub events: BTreeMap<usize, String>,
}

/// The JSON objects of a JSON-lines text with their line numbers; blank and `#` lines skipped.
pub fn json_lines(text: &str) -> Result<Vec<(usize, Line)>, ReplayError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let fail = |message: String| ReplayError::Session {
            line: index + 1,
            message,
        };
        match serde_json::from_str::<Value>(raw).map_err(|e| fail(e.to_string()))? {
            Value::Object(object) => lines.push((index + 1, object)),
            _ => return Err(fail("expected a JSON object".into())),
        }
    }
    Ok(lines)
}

/// Replays `session` (JSON lines) against `subject`.
pub fn replay(subject: &Subject, session: &str) -> Result<Replayed, ReplayError> {
    let lines = json_lines(session)?;
    let Some((first, open)) = lines.first() else {
        return Ok(Replayed::default());
    };
    let mut run = Run::open(subject, *first, open)?;
    for (line, event) in &lines[1..] {
        run.event(*line, event)?;
    }
    run.finish()?;
    Ok(run.replayed)
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Open,
    /// A filter closed it (code, at which line): only `close` may follow.
    Closing(u16, usize),
    Refused(usize),
    Closed(usize),
}

/// A subscription's message that waits while the filter holds deliveries.
struct Delivery {
    line: usize,
    sub: u64,
    id: String,
    opcode: Opcode,
    payload: Bytes,
    attrs: Vec<(String, Bytes)>,
}

struct Run {
    _host: Arc<FilterHost>,
    chain: Chain,
    conn: ConnState,
    replayed: Replayed,
    stage: Stage,
    /// Virtual milliseconds since the open, and the wall clock at the open.
    now: u64,
    clock_ms: i64,
    explicit_timers: bool,
    /// Pending timers: id to (due, filter).
    timers: BTreeMap<u64, (u64, usize)>,
    /// Live subscriptions: id to (source, filter).
    subscriptions: HashMap<u64, (String, usize)>,
    /// Records waiting for their result: ticket to (filter, context); and tickets in emit order.
    awaiting: HashMap<u64, (usize, Bytes)>,
    emits: Vec<u64>,
    held: bool,
    held_back: VecDeque<Delivery>,
    upstream_seq: u64,
}

fn session_error(line: usize, message: impl Into<String>) -> ReplayError {
    ReplayError::Session {
        line,
        message: message.into(),
    }
}

fn field_str<'a>(event: &'a Line, name: &str) -> Option<&'a str> {
    event.get(name).and_then(Value::as_str)
}

fn field_u64(line: usize, event: &Line, name: &str) -> Result<Option<u64>, ReplayError> {
    match event.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| session_error(line, format!("`{name}` must be a whole number >= 0"))),
    }
}

/// The names of a string array field (`sinks`, `sources`).
fn names(line: usize, event: &Line, name: &str) -> Result<Arc<[String]>, ReplayError> {
    match event.get(name) {
        None => Ok(Arc::default()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| session_error(line, format!("`{name}` must be an array of names"))),
        Some(_) => Err(session_error(line, format!("`{name}` must be an array of names"))),
    }
}

/// A map field of strings (`headers`, `captures`, `meta`, `attrs`) as pairs.
fn pairs(line: usize, event: &Line, name: &str) -> Result<Vec<(String, Bytes)>, ReplayError> {
    match event.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| {
                transcript::value_bytes(value)
                    .map(|v| (key.clone(), v))
                    .ok_or_else(|| session_error(line, format!("`{name}.{key}` must be a string")))
            })
            .collect(),
        Some(_) => Err(session_error(line, format!("`{name}` must be an object"))),
    }
}

/// A message's payload and opcode: `text` (text by default) or `base64` (binary by default).
fn payload(line: usize, event: &Line) -> Result<(Opcode, Bytes), ReplayError> {
    let bytes = transcript::get_bytes(event, "text", "base64").map_err(|e| session_error(line, e))?;
    let payload = bytes.ok_or_else(|| session_error(line, "a message needs `text` or `base64`"))?;
    let opcode = match field_str(event, "opcode") {
        Some("text") => Opcode::Text,
        Some("binary") => Opcode::Binary,
        Some(other) => return Err(session_error(line, format!("unknown opcode `{other}`"))),
        None if event.contains_key("text") => Opcode::Text,
        None => Opcode::Binary,
    };
    if opcode == Opcode::Text && std::str::from_utf8(&payload).is_err() {
        return Err(session_error(line, "a text message must be UTF-8"));
    }
    Ok((opcode, payload))
}

/// The chain, the connection's limits and names, for what the open event says.
fn build(subject: &Subject, line: usize, open: &Line) -> Result<(Arc<FilterHost>, Chain, ConnState), ReplayError> {
    let (dir, route_name, filters, sinks, sources, max_message_size, meta_limit) = match subject {
        Subject::Module { dir, name } => {
            let config = open.get("config").cloned().unwrap_or_else(|| json!({}));
            let filter: FilterRef = serde_json::from_value(json!({
                "module": name,
                "config": config,
                "timeout_ms": MODULE_TIMEOUT_MS,
            }))
            .map_err(|e| session_error(line, format!("`config`: {e}")))?;
            let limit = field_u64(line, open, "max_message_size")?.map_or(DEFAULT_MAX_MESSAGE, |n| n as usize);
            let sinks = names(line, open, "sinks")?;
            let sources = names(line, open, "sources")?;
            let route = field_str(open, "route").unwrap_or(name).to_string();
            (dir, route, vec![filter], sinks, sources, limit, MetaLimit::default())
        }
        Subject::Route {
            dir,
            name,
            route,
            sources,
        } => {
            let sinks: Arc<[String]> = route.sinks.iter().chain(&route.emit_sinks).cloned().collect();
            let (limit, meta_limit) = (route.max_message_size, route.meta_limit());
            (
                dir,
                name.clone(),
                route.filters.clone(),
                sinks,
                sources.clone(),
                limit,
                meta_limit,
            )
        }
    };
    let settings = FiltersConfig {
        dir: dir.clone(),
        watch: false,
        pool_size: 1,
        max_instances: 32,
        breaker_failures: 0,
        ..FiltersConfig::default()
    };
    let host =
        FilterHost::new(&settings, Arc::new(Metrics::default())).map_err(|e| ReplayError::Load(format!("{e:#}")))?;
    let chain = Chain::build(&host, &filters, &sinks).map_err(|e| ReplayError::Load(e.to_string()))?;

    let mut headers = http::HeaderMap::new();
    for (name, value) in pairs(line, open, "headers")? {
        let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|e| session_error(line, format!("header `{name}`: {e}")))?;
        let value = http::HeaderValue::from_maybe_shared(value)
            .map_err(|e| session_error(line, format!("header `{name}`: {e}")))?;
        headers.append(name, value);
    }
    let captures: Vec<(String, String)> = pairs(line, open, "captures")?
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let peer = field_str(open, "peer").unwrap_or("127.0.0.1:40000");
    let peer = peer
        .parse()
        .map_err(|e| session_error(line, format!("`peer` {peer:?}: {e}")))?;
    let id = field_u64(line, open, "conn")?.unwrap_or(1);
    let mut meta = from_request(&RequestInfo {
        conn_id: id,
        route: &route_name,
        path: field_str(open, "path").unwrap_or("/"),
        query: field_str(open, "query").unwrap_or(""),
        peer,
        captures: &captures,
        headers: &headers,
    });
    Arc::make_mut(&mut meta).extend(pairs(line, open, "meta")?);
    let conn = ConnState {
        id,
        meta,
        sinks,
        sources,
        max_message_size,
        meta_limit,
        journal: Some(Box::default()),
        ..ConnState::default()
    };
    Ok((host, chain, conn))
}

impl Run {
    fn open(subject: &Subject, line: usize, open: &Line) -> Result<Run, ReplayError> {
        if field_str(open, "event") != Some("open") {
            return Err(session_error(line, "a session starts with an `open` event"));
        }
        let (host, chain, conn) = build(subject, line, open)?;
        let explicit_timers = match field_str(open, "timers") {
            None | Some("auto") => false,
            Some("explicit") => true,
            Some(other) => {
                return Err(session_error(
                    line,
                    format!("`timers` is `auto` or `explicit`, not `{other}`"),
                ));
            }
        };
        let clock_ms = match open.get("clock_ms") {
            None => DEFAULT_CLOCK_MS,
            Some(value) => value
                .as_i64()
                .ok_or_else(|| session_error(line, "`clock_ms` must be a whole number"))?,
        };
        let mut run = Run {
            _host: host,
            chain,
            conn,
            replayed: Replayed::default(),
            stage: Stage::Open,
            now: 0,
            clock_ms,
            explicit_timers,
            timers: BTreeMap::new(),
            subscriptions: HashMap::new(),
            awaiting: HashMap::new(),
            emits: Vec::new(),
            held: false,
            held_back: VecDeque::new(),
            upstream_seq: 0,
        };
        run.replayed.events.insert(line, "open".into());
        run.set_clock(run.now);
        let (verdict, effects) = run.chain.open(&mut run.conn);
        run.after_call(line, effects);
        if let Err((status, body)) = verdict {
            let mut out = transcript::effect_line(line, "reject", None);
            out.insert("status".into(), status.into());
            transcript::put_payload(&mut out, &body);
            run.push(out);
            run.stage = Stage::Refused(line);
        }
        Ok(run)
    }

    fn push(&mut self, line: Line) {
        self.replayed.effects.push(Value::Object(line));
    }

    fn set_clock(&mut self, at: u64) {
        let clock = self.clock_ms + at as i64;
        if let Some(journal) = &mut self.conn.journal {
            journal.clock_ms = Some(clock);
        }
    }

    /// Writes what the filters noted, then keeps the books on their effects as the session does.
    fn after_call(&mut self, line: usize, effects: Vec<ChainEffect>) {
        let notes = std::mem::take(&mut self.conn.journal.get_or_insert_with(Box::<Journal>::default).notes);
        for (filter, note) in notes {
            self.push(transcript::note_line(line, &filter, &note));
        }
        for ChainEffect { filter, effect } in effects {
            match effect {
                Effect::Emit(emission) => {
                    self.awaiting.insert(emission.ticket, (filter, emission.context));
                    self.emits.push(emission.ticket);
                }
                Effect::Subscribe { id, source, .. } => {
                    self.subscriptions.insert(id, (source, filter));
                }
                Effect::Unsubscribe(sub) => {
                    if self.subscriptions.remove(&sub).is_some() {
                        self.release_handle();
                    }
                }
                Effect::Hold(on) => self.held = on,
                Effect::SetTimer { id, ms } => {
                    self.timers.insert(id, (self.now + ms, filter));
                }
                Effect::CancelTimer(id) => {
                    if self.timers.remove(&id).is_some() {
                        self.release_handle();
                    }
                }
                Effect::Send { .. } | Effect::Ack { .. } | Effect::Nack { .. } => {}
            }
        }
    }

    fn release_handle(&mut self) {
        self.conn.handles = self.conn.handles.saturating_sub(1);
    }

    /// What became of a message after the chain.
    fn verdict(&mut self, line: usize, dir: &str, verdict: Verdict) {
        self.push(transcript::verdict_line(line, dir, &verdict));
        if let Verdict::Close(code, _) = verdict {
            self.stage = Stage::Closing(code, line);
        }
    }

    fn closed_by_filter(&mut self, line: usize, code: u16, reason: &str) {
        self.push(transcript::close_line(line, code, reason));
        self.stage = Stage::Closing(code, line);
    }

    /// A hook for one filter (a result, a timer), and the close it may ask for.
    fn notify(&mut self, line: usize, filter: usize, call: HookCall) {
        let chain = &self.chain;
        let (close, effects) = chain.leasing(|lease| chain.notify(lease, &mut self.conn, filter, call));
        self.after_call(line, effects);
        if let Some((code, reason)) = close
            && self.stage == Stage::Open
        {
            self.closed_by_filter(line, code, &reason);
        }
    }

    fn fire(&mut self, line: usize, id: u64) {
        let Some((due, filter)) = self.timers.remove(&id) else {
            return;
        };
        self.release_handle();
        // Automatic timers fire at their due time; explicit ones when the session says.
        let at = if self.explicit_timers { self.now } else { due };
        self.set_clock(at);
        self.push(transcript::fire_line(line, id, at));
        self.notify(line, filter, HookCall::Timer(id));
    }

    /// Moves the clock to `at`, firing (automatic mode) every timer due by then, in due order.
    fn advance(&mut self, line: usize, at: u64) -> Result<(), ReplayError> {
        if at < self.now {
            return Err(session_error(
                line,
                format!("time goes back: `at` {at} after {}", self.now),
            ));
        }
        let mut fired = 0;
        while !self.explicit_timers && self.stage == Stage::Open {
            let next = (self.timers.iter())
                .filter(|(_, (due, _))| *due <= at)
                .min_by_key(|(id, (due, _))| (*due, **id))
                .map(|(id, (due, _))| (*id, *due));
            let Some((id, due)) = next else { break };
            fired += 1;
            if fired > MAX_FIRINGS {
                return Err(session_error(line, "timers keep firing without time passing"));
            }
            self.now = due;
            self.fire(line, id);
        }
        self.now = at;
        self.set_clock(at);
        Ok(())
    }

    fn event(&mut self, line: usize, event: &Line) -> Result<(), ReplayError> {
        let kind = field_str(event, "event").ok_or_else(|| session_error(line, "no `event`"))?;
        self.replayed.events.insert(line, kind.to_string());
        match &self.stage {
            Stage::Refused(at) => {
                return Err(session_error(
                    line,
                    format!("the open was refused (line {at}): nothing may follow"),
                ));
            }
            Stage::Closed(at) => return Err(session_error(line, format!("the session closed at line {at}"))),
            Stage::Closing(_, at) if kind != "close" => {
                return Err(session_error(
                    line,
                    format!("a filter closed the connection at line {at}: only `close` may follow"),
                ));
            }
            _ => {}
        }
        let at = match (field_u64(line, event, "at")?, field_u64(line, event, "advance_ms")?) {
            (Some(at), _) => at,
            (None, Some(advance)) => self.now + advance,
            (None, None) => self.now,
        };
        self.advance(line, at)?;
        if self.stage != Stage::Open && kind != "close" {
            return Ok(()); // a timer closed the connection: the event never happened
        }
        match kind {
            "message" => self.message(line, event)?,
            "delivery" => {
                let (opcode, payload) = payload(line, event)?;
                let sub =
                    field_u64(line, event, "sub")?.ok_or_else(|| session_error(line, "a delivery needs `sub`"))?;
                let delivery = Delivery {
                    line,
                    sub,
                    id: field_str(event, "id").unwrap_or("1").to_string(),
                    opcode,
                    payload,
                    attrs: pairs(line, event, "attrs")?,
                };
                self.held_back.push_back(delivery);
            }
            "result" => self.result(line, event)?,
            "time" => {}
            "timer" => {
                let id =
                    field_u64(line, event, "id")?.ok_or_else(|| session_error(line, "a timer event needs `id`"))?;
                if !self.timers.contains_key(&id) {
                    return Err(session_error(line, format!("no timer {id} is pending")));
                }
                self.fire(line, id);
            }
            "close" => {
                let code = match (field_u64(line, event, "code")?, &self.stage) {
                    (Some(code), _) => u16::try_from(code).map_err(|_| session_error(line, "`code` too large"))?,
                    (None, Stage::Closing(code, _)) => *code,
                    (None, _) => 1000,
                };
                self.close(line, code);
            }
            "open" => return Err(session_error(line, "a session opens once")),
            other => return Err(session_error(line, format!("unknown event `{other}`"))),
        }
        self.deliver_waiting();
        Ok(())
    }

    fn message(&mut self, line: usize, event: &Line) -> Result<(), ReplayError> {
        let (opcode, payload) = payload(line, event)?;
        match field_str(event, "dir").unwrap_or("in") {
            "in" => {
                let (verdict, effects) = self.chain.message(&mut self.conn, false, opcode, payload, None);
                self.after_call(line, effects);
                self.verdict(line, "in", verdict);
            }
            "out" => {
                self.upstream_seq += 1;
                let source = field_str(event, "source").unwrap_or("upstream");
                let id = match field_str(event, "id") {
                    Some(id) => MessageId::Given(Bytes::from(id.to_string())),
                    None => MessageId::Place(self.upstream_seq),
                };
                let source = Bytes::from(source.to_string());
                let message_meta = Some(MessageMeta {
                    source,
                    id,
                    ..MessageMeta::default()
                });
                let (verdict, effects) = self.chain.message(&mut self.conn, true, opcode, payload, message_meta);
                self.after_call(line, effects);
                self.verdict(line, "out", verdict);
            }
            other => return Err(session_error(line, format!("`dir` is `in` or `out`, not `{other}`"))),
        }
        Ok(())
    }

    /// Deliveries go to the chain unless the filter holds them (then they wait, as in a source).
    fn deliver_waiting(&mut self) {
        while !self.held && self.stage == Stage::Open {
            let Some(delivery) = self.held_back.pop_front() else {
                break;
            };
            // What a subscription had on its way when it ended is not delivered (as in the proxy).
            let Some((source, _)) = self.subscriptions.get(&delivery.sub) else {
                continue;
            };
            let message_meta = Some(MessageMeta {
                source: Bytes::from(source.clone()),
                id: MessageId::Given(Bytes::from(delivery.id)),
                sub: Some(delivery.sub),
                attrs: delivery.attrs,
            });
            let (verdict, effects) =
                (self.chain).message(&mut self.conn, true, delivery.opcode, delivery.payload, message_meta);
            self.after_call(delivery.line, effects);
            self.verdict(delivery.line, "out", verdict);
        }
    }

    fn result(&mut self, line: usize, event: &Line) -> Result<(), ReplayError> {
        let ticket = match (field_u64(line, event, "ticket")?, field_u64(line, event, "emit")?) {
            (Some(ticket), _) => ticket,
            (None, Some(n)) => *(n.checked_sub(1).and_then(|i| self.emits.get(i as usize))).ok_or_else(|| {
                session_error(
                    line,
                    format!("there is no emit {n} (the session made {})", self.emits.len()),
                )
            })?,
            (None, None) => return Err(session_error(line, "a result needs `ticket` or `emit`")),
        };
        let ok = event.get("ok").map_or(Some(true), Value::as_bool).unwrap_or(true);
        let detail = field_str(event, "detail").unwrap_or("").to_string();
        let outcome = if ok {
            Ok(detail)
        } else {
            Err(DeliveryError::Failed(detail))
        };
        let (filter, context) = if let Some(awaited) = self.awaiting.remove(&ticket) {
            awaited
        } else if !ok && let Some((_, filter)) = self.subscriptions.remove(&ticket) {
            // A subscription that cannot start, or ended for good.
            self.release_handle();
            (filter, Bytes::new())
        } else {
            return Err(session_error(
                line,
                format!("no record (or subscription) awaits a result for ticket {ticket}"),
            ));
        };
        let call = HookCall::Result {
            ticket,
            outcome,
            context,
        };
        self.notify(line, filter, call);
        Ok(())
    }

    fn close(&mut self, line: usize, code: u16) {
        let effects = self.chain.close(&mut self.conn, code);
        self.after_call(line, effects);
        self.stage = Stage::Closed(line);
    }

    /// A filter closed the connection and the session ended there: the close hook runs.
    fn finish(&mut self) -> Result<(), ReplayError> {
        if let Stage::Closing(code, line) = self.stage {
            self.close(line, code);
        }
        Ok(())
    }
}

/// The `replay` command: replays `session` (or, for a folder, every fixture in it) against
/// `subject`; prints the effects, or compares them with `expect`. `Ok(false)` when they differ.
pub fn cli(subject: &Subject, session: &Path, expect: Option<&Path>, masks: &[expect::Mask]) -> anyhow::Result<bool> {
    if session.is_dir() {
        let sessions = fixtures::sessions(session).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!sessions.is_empty(), "{}: no *.session.jsonl in it", session.display());
        let mut passed = true;
        for case in &sessions {
            let expected = fixtures::read_effects(&fixtures::effects_of(case)).map_err(anyhow::Error::msg)?;
            let text = std::fs::read_to_string(case)?;
            let replayed = replay(subject, &text)?;
            match expect::compare(&replayed, &expected, masks) {
                Ok(()) => println!("ok   {}", case.display()),
                Err(difference) => {
                    println!("FAIL {}\n{difference}", case.display());
                    passed = false;
                }
            }
        }
        return Ok(passed);
    }
    let text = std::fs::read_to_string(session).map_err(|e| anyhow::anyhow!("{}: {e}", session.display()))?;
    let replayed = replay(subject, &text)?;
    let Some(expect) = expect else {
        for effect in &replayed.effects {
            println!("{effect}");
        }
        return Ok(true);
    };
    let expected = fixtures::read_effects(expect).map_err(anyhow::Error::msg)?;
    match expect::compare(&replayed, &expected, masks) {
        Ok(()) => {
            println!("ok: {} effects as expected", replayed.effects.len());
            Ok(true)
        }
        Err(difference) => {
            eprintln!("{}: differs from {}\n{difference}", session.display(), expect.display());
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests;
