//! The insert socket: NSDb's insert body `{db, namespace, metric, bit}` (one, or an array of at
//! most `max_records`), checked whole, then kept in the window whole (`retention::keep`: all
//! the records or none) and only then emitted to the route's sink as envelopes the stream side
//! reads: the body plus `seq`, its record number (one emitted record per metric and message,
//! its envelopes one per line). One answer per message: `{"inserted":N}`, or
//! `{"error":REASON}` when nothing was kept.

use framegate_guest::{Conn, Message, Opcode, Record, Verdict, count, now_ms};
use serde_json::Value;

use crate::eval::Bit;
use crate::retention::{self, Metric};
use crate::sql::MAX_NAME;
use crate::{Config, error_reply};

/// One record to insert.
struct Insert {
    metric: Metric,
    bit: Bit,
}

/// db, namespace and metric: they become a subject or topic (`nsdb.DB.NS.METRIC`), so no dots,
/// spaces or wildcards.
fn text_field(body: &serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match body.get(key) {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_NAME
                && !s.contains(|c: char| c.is_whitespace() || ".*>".contains(c)) =>
        {
            Ok(s.clone())
        }
        _ => Err(format!(
            "{key} must be a non-empty string of at most {MAX_NAME} bytes without dots, spaces, * or >"
        )),
    }
}

fn parse_one(body: &Value, now: i64) -> Result<Insert, String> {
    let body = body
        .as_object()
        .ok_or("an insert is an object {db, namespace, metric, bit}")?;
    let metric = Metric {
        db: text_field(body, "db")?,
        namespace: text_field(body, "namespace")?,
        name: text_field(body, "metric")?,
    };
    let bit = Bit::from_json(body.get("bit").ok_or("bit is missing")?, now)?;
    Ok(Insert { metric, bit })
}

/// Every record of a message, or why the message is refused.
fn parse(text: &str, now: i64, max_records: usize) -> Result<Vec<Insert>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(items) if items.is_empty() => Err("an empty array inserts nothing".into()),
        Value::Array(items) if items.len() > max_records => Err(format!(
            "an insert message holds at most {max_records} records, this one has {}",
            items.len()
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_one(item, now).map_err(|e| format!("insert {i}: {e}")))
            .collect(),
        one => Ok(vec![parse_one(&one, now)?]),
    }
}

/// The envelope the stream side gets for a kept record: `seq` is its number in the metric at
/// `origin` (this process).
pub fn envelope(metric: &Metric, origin: &str, seq: i64, bit_json: &str) -> String {
    let text = crate::json;
    format!(
        "{{\"db\":{},\"namespace\":{},\"metric\":{},\"origin\":{},\"seq\":{seq},\"bit\":{bit_json}}}",
        text(&metric.db),
        text(&metric.namespace),
        text(&metric.name),
        text(origin)
    )
}

/// The records of a message by metric, in order of first appearance, each as its bit's JSON.
fn by_metric(inserts: &[Insert]) -> Vec<(Metric, Vec<String>)> {
    let mut groups: Vec<(Metric, Vec<String>)> = Vec::new();
    for insert in inserts {
        let bit = insert.bit.to_json();
        match groups.iter_mut().find(|(metric, _)| *metric == insert.metric) {
            Some((_, bits)) => bits.push(bit),
            None => groups.push((insert.metric.clone(), vec![bit])),
        }
    }
    groups
}

/// Keeps every record (all or none), then emits them: one record to the sink per metric, its
/// envelopes one per line (in order), so that a stream connection reads a whole insert message
/// in one call. `Err` says why nothing was kept.
fn insert_all(config: &Config, conn: &Conn, inserts: &[Insert], now: i64) -> Result<usize, String> {
    let sink = config.sink.as_deref().expect("checked at init");
    let origin = retention::origin(conn, now);
    let groups = by_metric(inserts);
    let firsts = retention::keep(&groups, &config.retention, now)?;
    for ((metric, bits), first) in groups.iter().zip(&firsts) {
        let lines: Vec<String> = (bits.iter().zip(*first..))
            .map(|(bit, seq)| envelope(metric, &origin, seq, bit))
            .collect();
        let key = format!("{}.{}.{}", metric.db, metric.namespace, metric.name);
        let record = Record {
            key: Some(key.as_bytes()),
            ..Record::default()
        };
        if let Err(e) = conn.emit_with(sink, lines.join("\n").as_bytes(), record) {
            // The window keeps none of the message. Emits cannot be taken back: in a message
            // mixing metrics, those emitted before this one still go when the call returns.
            retention::forget(&groups, &firsts);
            return Err(format!("the records of {key} could not be sent to {sink}: {e}"));
        }
    }
    Ok(inserts.len())
}

pub fn message(config: &Config, conn: &Conn, message: &mut Message) -> Verdict {
    let now = now_ms();
    let reply = match (message.opcode(), message.text()) {
        (Opcode::Text, Some(text)) => {
            parse(text, now, config.max_records).and_then(|inserts| insert_all(config, conn, &inserts, now))
        }
        _ => Err("inserts are JSON text messages".into()),
    };
    let reply = match reply {
        Ok(n) => format!("{{\"inserted\":{n}}}"),
        Err(e) => {
            count("inserts_refused", 1.0);
            error_reply(&e)
        }
    };
    let _ = conn.send_text(&reply);
    Verdict::Drop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_one_or_many_checked_whole() {
        let one =
            r#"{"db":"db","namespace":"ns","metric":"m","bit":{"timestamp":5,"value":1.5,"dimensions":{"k":"v"}}}"#;
        let parsed = parse(one, 9, 10).unwrap();
        assert_eq!(parsed[0].metric.name, "m");
        assert_eq!(parsed[0].bit.timestamp, 5);
        let many = format!(
            "[{one},{}]",
            r#"{"db":"db","namespace":"ns","metric":"m","bit":{"value":2}}"#
        );
        let parsed = parse(&many, 9, 10).unwrap();
        assert_eq!(parsed[1].bit.timestamp, 9, "no timestamp: the time of arrival");
        assert_eq!(
            parse(
                r#"[{"db":"db","namespace":"ns","metric":"m","bit":{"value":"x"}}]"#,
                0,
                10
            )
            .err()
            .unwrap(),
            "insert 0: bit.value must be a number"
        );
        assert_eq!(
            parse(r#"{"db":"db","metric":"m","bit":{}}"#, 0, 10).err().unwrap(),
            "namespace must be a non-empty string of at most 256 bytes without dots, spaces, * or >"
        );
        assert!(parse(r#"{"db":"d.b","namespace":"ns","metric":"m","bit":{"value":1}}"#, 0, 10).is_err());
        assert!(parse("nope", 0, 10).err().unwrap().starts_with("not JSON"));
        let eleven = format!("[{}]", [one; 11].join(","));
        assert_eq!(parse(&eleven, 0, 11).unwrap().len(), 11);
        assert_eq!(
            parse(&eleven, 0, 10).err().unwrap(),
            "an insert message holds at most 10 records, this one has 11"
        );
        let long = format!(
            r#"{{"db":"{}","namespace":"ns","metric":"m","bit":{{"value":1}}}}"#,
            "d".repeat(257)
        );
        assert!(parse(&long, 0, 10).err().unwrap().starts_with("db must be"));
        let bit = parse(one, 0, 10).unwrap().remove(0).bit;
        assert_eq!(
            envelope(
                &Metric {
                    db: "db".into(),
                    namespace: "ns".into(),
                    name: "m".into()
                },
                "o1",
                3,
                &bit.to_json()
            ),
            r#"{"db":"db","namespace":"ns","metric":"m","origin":"o1","seq":3,"bit":{"timestamp":5,"value":1.5,"dimensions":{"k":"v"},"tags":{}}}"#
        );
    }
}
