//! Recording a route's sessions as replay files (`[routes.NAME.record]`, docs/replay.md): what
//! happened to each connection (`ROUTE-CONN.session.jsonl`, timers explicit, `at` on every event)
//! and what its filters did (`ROUTE-CONN.effects.jsonl`), capped in sessions and bytes, with
//! named metadata redacted. A session's files are written when it ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;

use crate::config::RecordConfig;
use crate::filter::Verdict;
use crate::filter::abi::{ConnState, Journal};
use crate::filter::transcript::{self, Line};
use crate::types::{Delivered, Opcode, SinkResult};

const REDACTED: &str = "[redacted]";

/// A route's recording: its settings and what it has used of its caps.
pub struct RouteRecorder {
    route: Arc<str>,
    config: RecordConfig,
    sessions: AtomicUsize,
    bytes: AtomicU64,
}

impl RouteRecorder {
    pub fn new(route: &str, config: RecordConfig) -> Arc<RouteRecorder> {
        Arc::new(RouteRecorder {
            route: route.into(),
            config,
            sessions: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Starts recording a connection, before its filters' `fg_on_open` (the connection keeps a
    /// journal from now on); `None` once the route recorded `max_sessions` or `max_bytes`.
    pub fn start(self: &Arc<Self>, conn: &mut ConnState) -> Option<Recording> {
        if self.bytes.load(Ordering::Relaxed) >= self.config.max_bytes
            || self.sessions.fetch_add(1, Ordering::Relaxed) >= self.config.max_sessions
        {
            return None;
        }
        conn.journal = Some(Box::<Journal>::default());
        let clock_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut recording = Recording {
            recorder: self.clone(),
            conn: conn.id,
            started: Instant::now(),
            session: Vec::new(),
            effects: Vec::new(),
            line: 0,
            cut: false,
        };
        let mut open = self.open_line(conn);
        open.insert("clock_ms".into(), clock_ms.into());
        open.insert("timers".into(), "explicit".into());
        recording.write(true, &open);
        Some(recording)
    }

    /// The open event: the metadata as the upgrade made it, redacted.
    fn open_line(&self, conn: &ConnState) -> Line {
        let mut open = Line::new();
        open.insert("event".into(), "open".into());
        open.insert("conn".into(), conn.id.into());
        let (mut headers, mut captures, mut meta) = (Line::new(), Line::new(), Line::new());
        let redacted_query: Vec<&str> = (conn.meta.keys())
            .filter_map(|k| k.strip_prefix("query."))
            .filter(|name| self.config.redacts(&format!("query.{name}")))
            .collect();
        for (key, value) in conn.meta.iter() {
            let value = if self.config.redacts(key) {
                Value::from(REDACTED)
            } else if key == "query" {
                redact_query(&String::from_utf8_lossy(value), &redacted_query).into()
            } else {
                transcript::bytes_value(Some(value))
            };
            match key.as_str() {
                "route" | "path" | "peer" | "query" => {
                    open.insert(key.clone(), value);
                }
                "conn.id" => {}
                _ if key.starts_with("query.") => {} // made again from `query`
                _ => match (key.strip_prefix("header."), key.strip_prefix("path.")) {
                    (Some(name), _) => {
                        headers.insert(name.to_string(), value);
                    }
                    (_, Some(name)) => {
                        captures.insert(name.to_string(), value);
                    }
                    _ => {
                        meta.insert(key.clone(), value);
                    }
                },
            }
        }
        for (name, map) in [("headers", headers), ("captures", captures), ("meta", meta)] {
            if !map.is_empty() {
                open.insert(name.into(), map.into());
            }
        }
        let names = |list: &[String]| Value::from(list.to_vec());
        open.insert("sinks".into(), names(&conn.sinks));
        open.insert("sources".into(), names(&conn.sources));
        open.insert("max_message_size".into(), conn.max_message_size.into());
        open
    }
}

/// The raw query string with the values of `names` redacted.
fn redact_query(query: &str, names: &[&str]) -> String {
    if names.is_empty() {
        return query.to_string();
    }
    (query.split('&'))
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            let decoded = crate::config::percent_decode_with(name, true);
            if names.contains(&decoded.as_str()) {
                format!("{name}={REDACTED}")
            } else {
                pair.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One connection being recorded.
pub struct Recording {
    recorder: Arc<RouteRecorder>,
    conn: u64,
    started: Instant,
    session: Vec<u8>,
    effects: Vec<u8>,
    /// The number of the last session line written.
    line: usize,
    /// Past the route's byte cap: nothing more is written.
    cut: bool,
}

impl Recording {
    fn write(&mut self, to_session: bool, line: &Line) {
        if self.cut {
            return;
        }
        let mut text = Value::Object(line.clone()).to_string();
        text.push('\n');
        let total = self.recorder.bytes.fetch_add(text.len() as u64, Ordering::Relaxed) + text.len() as u64;
        if total > self.recorder.config.max_bytes {
            self.cut = true;
            return;
        }
        if to_session {
            self.session.extend_from_slice(text.as_bytes());
            self.line += 1;
        } else {
            self.effects.extend_from_slice(text.as_bytes());
        }
    }

    fn notes(&mut self, conn: &mut ConnState) {
        let notes = conn
            .journal
            .as_mut()
            .map(|j| std::mem::take(&mut j.notes))
            .unwrap_or_default();
        for (filter, note) in notes {
            let line = transcript::note_line(self.line, &filter, &note);
            self.write(false, &line);
        }
    }

    fn timed(&self, kind: &str) -> Line {
        let mut line = Line::new();
        line.insert("event".into(), kind.into());
        line.insert("at".into(), (self.started.elapsed().as_millis() as u64).into());
        line
    }

    /// A message from the client, before the chain runs.
    pub fn client_message(&mut self, opcode: Opcode, payload: &Bytes) {
        let mut line = self.timed("message");
        if opcode == Opcode::Binary && std::str::from_utf8(payload).is_ok() {
            line.insert("opcode".into(), "binary".into());
        }
        transcript::put_payload(&mut line, payload);
        self.write(true, &line);
    }

    /// A message towards the client (a subscription's delivery, or the upstream's).
    pub fn towards_client(&mut self, delivered: &Delivered) {
        let mut line = match delivered.sub {
            Some(sub) => {
                let mut line = self.timed("delivery");
                line.insert("sub".into(), sub.into());
                line
            }
            None => {
                let mut line = self.timed("message");
                line.insert("dir".into(), "out".into());
                line.insert("source".into(), delivered.source.to_string().into());
                line
            }
        };
        line.insert("id".into(), delivered.id.as_str().into());
        if !delivered.attrs.is_empty() {
            let attrs: Line = (delivered.attrs.iter())
                .map(|(name, value)| (name.clone(), transcript::bytes_value(Some(value))))
                .collect();
            line.insert("attrs".into(), attrs.into());
        }
        if delivered.opcode == Opcode::Binary && std::str::from_utf8(&delivered.payload).is_ok() {
            line.insert("opcode".into(), "binary".into());
        }
        transcript::put_payload(&mut line, &delivered.payload);
        self.write(true, &line);
    }

    /// What the chain did with the message just written.
    pub fn verdict(&mut self, conn: &mut ConnState, dir: &str, verdict: &Verdict) {
        self.notes(conn);
        let line = transcript::verdict_line(self.line, dir, verdict);
        self.write(false, &line);
    }

    /// A sink's (or a subscription's) result, before the filter hears it.
    pub fn result(&mut self, result: &SinkResult) {
        let mut line = self.timed("result");
        line.insert("ticket".into(), result.ticket.into());
        let (ok, detail) = match &result.outcome {
            Ok(detail) => (true, detail.clone()),
            Err(error) => (false, error.to_string()),
        };
        line.insert("ok".into(), ok.into());
        line.insert("detail".into(), detail.into());
        self.write(true, &line);
    }

    /// A timer firing, before the filter hears it.
    pub fn timer(&mut self, id: u64) {
        let mut line = self.timed("timer");
        line.insert("id".into(), id.into());
        self.write(true, &line);
        let at = line.get("at").and_then(Value::as_u64).unwrap_or(0);
        let fired = transcript::fire_line(self.line, id, at);
        self.write(false, &fired);
    }

    /// What a hook did (the open's, a result's, a timer's), and the close it asked for.
    pub fn after_hook(&mut self, conn: &mut ConnState, close: Option<&(u16, String)>) {
        self.notes(conn);
        if let Some((code, reason)) = close {
            let line = transcript::close_line(self.line, *code, reason);
            self.write(false, &line);
        }
    }

    /// The connection closed with `code`: the close event (what the close hooks did follows
    /// with `finish`).
    pub fn close(&mut self, code: u16) {
        let mut line = self.timed("close");
        line.insert("code".into(), code.into());
        self.write(true, &line);
    }

    /// Writes the files, off the async workers.
    pub fn finish(mut self, conn: &mut ConnState) {
        self.notes(conn);
        let base = self
            .recorder
            .config
            .dir
            .join(format!("{}-{}", self.recorder.route, self.conn));
        let files: [(PathBuf, Vec<u8>); 2] = [
            (base.with_extension("session.jsonl"), std::mem::take(&mut self.session)),
            (base.with_extension("effects.jsonl"), std::mem::take(&mut self.effects)),
        ];
        let dir = self.recorder.config.dir.clone();
        tokio::task::spawn_blocking(move || {
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| files.iter().try_for_each(|(path, bytes)| std::fs::write(path, bytes)));
            if let Err(e) = written {
                tracing::warn!(dir = %dir.display(), "cannot write a recorded session: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_unless_kept() {
        let config = RecordConfig {
            dir: "x".into(),
            max_sessions: 1,
            max_bytes: 1 << 20,
            redact: vec!["query.token".into()],
            keep: vec!["header.cookie".into()],
        };
        let recorder = RouteRecorder::new("r", config);
        let meta = [
            ("header.authorization", "Bearer s3cret"),
            ("header.cookie", "a=1"),
            ("query", "room=7&token=s3cret"),
            ("query.token", "s3cret"),
            ("query.room", "7"),
            ("path.room", "7"),
        ];
        let mut conn = ConnState {
            id: 9,
            meta: Arc::new(meta.iter().map(|(k, v)| (k.to_string(), Bytes::from(*v))).collect()),
            ..ConnState::default()
        };
        let recording = recorder.start(&mut conn).unwrap();
        let text = String::from_utf8(recording.session.clone()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let open: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(open["headers"]["authorization"], REDACTED);
        assert_eq!(open["headers"]["cookie"], "a=1");
        assert_eq!(open["query"], "room=7&token=[redacted]");
        assert_eq!(open["captures"]["room"], "7");
        // The cap: a second session is not recorded.
        let mut other = ConnState::default();
        assert!(recorder.start(&mut other).is_none());
        assert!(other.journal.is_none());
    }
}
