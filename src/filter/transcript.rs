//! The JSON-lines form of what a connection did and what its filters did (docs/replay.md):
//! bytes as text or base64, and the effect line of each thing a journal noted. Shared by the
//! replay command (src/replay/) and recording (src/session/record.rs), so both write the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Verdict;
use super::abi::{Effect, Note};
use crate::types::Opcode;

/// A JSON object under construction.
pub type Line = Map<String, Value>;

/// Puts `bytes` under `name` as text when UTF-8, else under `fallback` as base64.
pub fn put_bytes(line: &mut Line, name: &str, fallback: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => line.insert(name.into(), text.into()),
        Err(_) => line.insert(fallback.into(), BASE64.encode(bytes).into()),
    };
}

/// Puts a payload as `text` or `base64`.
pub fn put_payload(line: &mut Line, payload: &[u8]) {
    put_bytes(line, "text", "base64", payload);
}

/// Puts an optional byte field as `NAME` (UTF-8) or `NAME_base64`.
fn put_field(line: &mut Line, name: &str, bytes: &[u8]) {
    put_bytes(line, name, &format!("{name}_base64"), bytes);
}

/// A byte value as JSON: a string when UTF-8, else `{"base64": ...}`; `null` when absent.
pub fn bytes_value(bytes: Option<&[u8]>) -> Value {
    match bytes.map(std::str::from_utf8) {
        None => Value::Null,
        Some(Ok(text)) => text.into(),
        Some(Err(_)) => json!({ "base64": BASE64.encode(bytes.unwrap_or_default()) }),
    }
}

/// Reads a byte value written by `bytes_value` (or a plain string).
pub fn value_bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::String(text) => Some(Bytes::from(text.clone())),
        Value::Object(map) => map
            .get("base64")
            .and_then(Value::as_str)
            .and_then(|b| BASE64.decode(b).ok())
            .map(Bytes::from),
        _ => None,
    }
}

/// Reads a byte field written by `put_bytes`: `Ok(None)` when neither form is there.
pub fn get_bytes(line: &Line, name: &str, fallback: &str) -> Result<Option<Bytes>, String> {
    if let Some(value) = line.get(name) {
        return value
            .as_str()
            .map(|t| Some(Bytes::from(t.to_string())))
            .ok_or_else(|| format!("`{name}` is not a string"));
    }
    match line.get(fallback) {
        None => Ok(None),
        Some(value) => value
            .as_str()
            .and_then(|b| BASE64.decode(b).ok())
            .map(|b| Some(Bytes::from(b)))
            .ok_or_else(|| format!("`{fallback}` is not base64")),
    }
}

pub fn opcode_name(opcode: Opcode) -> &'static str {
    match opcode {
        Opcode::Text => "text",
        Opcode::Binary => "binary",
    }
}

pub fn level_name(level: i32) -> &'static str {
    match level {
        0 => "error",
        1 => "warn",
        2 => "info",
        3 => "debug",
        _ => "trace",
    }
}

/// An effect line: `line` (the session event that caused it), `effect`, and `filter` if any.
pub fn effect_line(line: usize, effect: &str, filter: Option<&str>) -> Line {
    let mut out = Line::new();
    out.insert("line".into(), line.into());
    out.insert("effect".into(), effect.into());
    if let Some(filter) = filter {
        out.insert("filter".into(), filter.into());
    }
    out
}

/// What became of a message after the chain: `pass` (with `dir`), `drop` or `close`.
pub fn verdict_line(line: usize, dir: &str, verdict: &Verdict) -> Line {
    match verdict {
        Verdict::Deliver { opcode, payload } => {
            let mut out = effect_line(line, "pass", None);
            out.insert("dir".into(), dir.into());
            out.insert("opcode".into(), opcode_name(*opcode).into());
            put_payload(&mut out, payload);
            out
        }
        Verdict::Drop => effect_line(line, "drop", None),
        Verdict::Close(code, reason) => close_line(line, *code, reason),
    }
}

/// The connection is closed by a filter's verdict or its `close`.
pub fn close_line(line: usize, code: u16, reason: &str) -> Line {
    let mut out = effect_line(line, "close", None);
    out.insert("code".into(), code.into());
    out.insert("reason".into(), reason.into());
    out
}

/// The host fired timer `id`, `at` milliseconds after the open.
pub fn fire_line(line: usize, id: u64, at: u64) -> Line {
    let mut out = effect_line(line, "fire", None);
    out.insert("id".into(), id.into());
    out.insert("at".into(), at.into());
    out
}

/// The effect line of one thing a filter did.
pub fn note_line(line: usize, filter: &str, note: &Note) -> Line {
    let start = |effect: &str| effect_line(line, effect, Some(filter));
    match note {
        Note::Effect(effect) => effect_note(start, effect),
        Note::Replace(payload) => {
            let mut out = start("replace");
            put_payload(&mut out, payload);
            out
        }
        Note::Meta(key, value) | Note::Store(key, value) => {
            let kind = if matches!(note, Note::Meta(..)) {
                "meta"
            } else {
                "store"
            };
            let mut out = start(kind);
            out.insert("key".into(), key.as_str().into());
            out.insert("value".into(), bytes_value(value.as_deref()));
            out
        }
        Note::StoreAdd { key, delta, value } => {
            let mut out = start("store_add");
            out.insert("key".into(), key.as_str().into());
            out.insert("delta".into(), (*delta).into());
            out.insert("value".into(), (*value).into());
            out
        }
        Note::Log(level, text) => {
            let mut out = start("log");
            out.insert("level".into(), level_name(*level).into());
            out.insert("text".into(), text.as_str().into());
            out
        }
        Note::Metric { counter, name, value } => {
            let mut out = start("metric");
            out.insert("kind".into(), (if *counter { "counter" } else { "gauge" }).into());
            out.insert("name".into(), name.as_str().into());
            out.insert("value".into(), json!(value));
            out
        }
        Note::Failed { kind, message } => {
            let mut out = start("failed");
            out.insert("kind".into(), (*kind).into());
            out.insert("message".into(), message.as_str().into());
            out
        }
    }
}

fn effect_note(start: impl Fn(&str) -> Line, effect: &Effect) -> Line {
    match effect {
        Effect::Send { opcode, payload } => {
            let mut out = start("send");
            out.insert("opcode".into(), opcode_name(*opcode).into());
            put_payload(&mut out, payload);
            out
        }
        Effect::Emit(emission) => {
            let mut out = start("emit");
            out.insert("ticket".into(), emission.ticket.into());
            out.insert("sink".into(), emission.sink.as_str().into());
            if let Some(key) = &emission.key {
                put_field(&mut out, "key", key);
            }
            if !emission.headers.is_empty() {
                let headers: Line = (emission.headers.iter())
                    .map(|(name, value)| (name.clone(), bytes_value(Some(value))))
                    .collect();
                out.insert("headers".into(), headers.into());
            }
            if !emission.context.is_empty() {
                put_field(&mut out, "context", &emission.context);
            }
            put_payload(&mut out, &emission.payload);
            out
        }
        Effect::Subscribe { id, source, spec } => {
            let mut out = start("subscribe");
            out.insert("id".into(), (*id).into());
            out.insert("source".into(), source.as_str().into());
            out.insert("spec".into(), spec.as_str().into());
            out
        }
        Effect::Ack { sub, id } | Effect::Nack { sub, id } => {
            let mut out = start(if matches!(effect, Effect::Ack { .. }) {
                "ack"
            } else {
                "nack"
            });
            out.insert("sub".into(), (*sub).into());
            out.insert("id".into(), id.as_str().into());
            out
        }
        Effect::Unsubscribe(sub) => {
            let mut out = start("unsubscribe");
            out.insert("sub".into(), (*sub).into());
            out
        }
        Effect::Hold(on) => {
            let mut out = start("hold");
            out.insert("on".into(), (*on).into());
            out
        }
        Effect::SetTimer { id, ms } => {
            let mut out = start("timer");
            out.insert("id".into(), (*id).into());
            out.insert("ms".into(), (*ms).into());
            out
        }
        Effect::CancelTimer(id) => {
            let mut out = start("cancel_timer");
            out.insert("id".into(), (*id).into());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::abi::Emission;

    #[test]
    fn bytes_round_trip_as_text_or_base64() {
        let mut line = Line::new();
        put_payload(&mut line, b"hi");
        assert_eq!(Value::Object(line.clone()), json!({"text": "hi"}));
        assert_eq!(get_bytes(&line, "text", "base64").unwrap(), Some(Bytes::from("hi")));
        let mut line = Line::new();
        put_payload(&mut line, &[0xff, 0]);
        assert_eq!(Value::Object(line.clone()), json!({"base64": "/wA="}));
        assert_eq!(
            get_bytes(&line, "text", "base64").unwrap().as_deref(),
            Some(&[0xff, 0][..])
        );
        assert_eq!(value_bytes(&bytes_value(Some(&[0xff]))).as_deref(), Some(&[0xff][..]));
        assert_eq!(bytes_value(None), Value::Null);
    }

    #[test]
    fn an_emit_reads_as_one_line() {
        let effect = Effect::Emit(Box::new(Emission {
            ticket: 3,
            sink: "out".into(),
            key: Some("k".into()),
            payload: "p".into(),
            headers: vec![("h".into(), "v".into())],
            context: Bytes::new(),
        }));
        let line = note_line(4, "tag", &Note::Effect(effect));
        assert_eq!(
            Value::Object(line),
            json!({"line": 4, "effect": "emit", "filter": "tag", "ticket": 3, "sink": "out",
                   "key": "k", "headers": {"h": "v"}, "text": "p"})
        );
    }
}
