//! The bundled `schema` filter: checks every JSON message (from a client or a feed) against a
//! DataBrew-style `stream_schema`. Valid messages pass unchanged, byte for byte (unless
//! `extra_columns = "drop"` or `coerce_numeric_strings` rewrote them). A message that fails is
//! never passed on: it goes to the `dead_letter` sink with the reasons in header
//! `framegate-schema-errors`, the client (if any) gets `{"error":"schema",...}` naming every
//! problem, and `framegate_filter_custom_total{filter="schema",name="REASON:COLUMN"}` counts it.
//! The config is the `stream_schema` itself, or a DataBrew (Blink) YAML file as is through the
//! route's `config_file` (its `service.stream_schema` or `source.stream_schema`).

mod check;
mod schema;

use framegate_guest::{Conn, Filter, Level, Message, Record, Verdict, count, export_filter, log};
use serde::Deserialize;

use check::{Extra, Passed, Policy, Refused, check};
use schema::{RawStream, Stream};

/// The filter's config. Unknown top-level keys are allowed: a Blink file carries many.
#[derive(Deserialize)]
struct Config {
    stream_schema: Option<Vec<RawStream>>,
    /// Blink's layouts: `service.stream_schema` (older), `source.stream_schema` (newer).
    service: Option<Holder>,
    source: Option<Holder>,
    /// Which stream of the schema to check; the first by default.
    stream: Option<String>,
    #[serde(default)]
    extra_columns: Extra,
    #[serde(default)]
    coerce_numeric_strings: bool,
    /// A sink of the route for refused messages.
    dead_letter: Option<String>,
}

#[derive(Deserialize)]
struct Holder {
    stream_schema: Option<Vec<RawStream>>,
}

#[derive(Default)]
struct Schema {
    stream: Option<Stream>,
    policy: Policy,
    dead_letter: Option<String>,
}

fn read_config(config: &[u8]) -> Result<(Stream, Policy, Option<String>), String> {
    let config: Config = serde_json::from_slice(config).map_err(|e| format!("schema: config: {e}"))?;
    let streams = config
        .stream_schema
        .or_else(|| config.source.and_then(|h| h.stream_schema))
        .or_else(|| config.service.and_then(|h| h.stream_schema))
        .ok_or("schema: config: no stream_schema (nor service.stream_schema, source.stream_schema)")?;
    let raw = match &config.stream {
        Some(name) => streams
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("schema: config: no stream {name:?} in stream_schema"))?,
        None => streams
            .into_iter()
            .next()
            .ok_or("schema: config: stream_schema is empty")?,
    };
    let stream = Stream::from_raw(raw).map_err(|e| format!("schema: config: {e}"))?;
    let policy = Policy {
        extra: config.extra_columns,
        coerce_numeric_strings: config.coerce_numeric_strings,
    };
    Ok((stream, policy, config.dead_letter))
}

impl Filter for Schema {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let (stream, policy, dead_letter) = read_config(config)?;
        self.stream = Some(stream);
        self.policy = policy;
        self.dead_letter = dead_letter;
        Ok(())
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        let Some(stream) = &self.stream else {
            return Verdict::Continue;
        };
        if !message.from_client() {
            return Verdict::Continue;
        }
        match check(stream, &self.policy, message.payload()) {
            Ok(Passed::Unchanged) => Verdict::Continue,
            Ok(Passed::Rewritten { payload, coerced }) => {
                if coerced > 0 {
                    count("coerced", coerced as f64);
                }
                match message.replace(&payload) {
                    Ok(()) => Verdict::Continue,
                    Err(_) => Verdict::Close,
                }
            }
            Err(refused) => {
                self.refuse(conn, message, &stream.name, &refused);
                Verdict::Drop
            }
        }
    }
}

impl Schema {
    fn refuse(&self, conn: &Conn, message: &mut Message, stream: &str, refused: &Refused) {
        for violation in &refused.violations {
            count(&violation.counted_as, 1.0);
        }
        if refused.more > 0 {
            count("unlisted", refused.more as f64);
        }
        let reasons = serde_json::to_string(&refused.violations).expect("violations serialize");
        if let Some(sink) = &self.dead_letter {
            let headers = [("framegate-schema-errors", reasons.as_bytes())];
            let record = Record {
                key: None,
                headers: &headers,
                context: b"",
            };
            if let Err(e) = conn.emit_with(sink, message.payload(), record) {
                log(Level::Error, &format!("schema: dead letter sink {sink:?}: {e}"));
            }
        }
        let more = match refused.more {
            0 => String::new(),
            more => format!(r#","more":{more}"#),
        };
        let answer = format!(
            r#"{{"error":"schema","stream":{},"violations":{reasons}{more}}}"#,
            serde_json::Value::from(stream)
        );
        // A feed has no client to answer; `send` then says so, and that is fine.
        let _ = conn.send_text(&answer);
    }
}

export_filter!(Schema);
