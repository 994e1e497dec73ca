//! The connection handle a hook gets ([`Conn`]: metadata, sending, sinks, sources, timers,
//! closing), what `emit` and `fg_on_result` carry, and the host services that need no
//! connection (time, logs, metrics).

use crate::{Error, Opcode, check32, len, names, sized, sys};

/// Log levels, for [`log`].
///
/// ```no_run
/// use framegate_guest::{log, Level};
/// log(Level::Debug, "cache miss");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// Worth knowing in normal operation.
    Info = 2,
    /// For finding a problem.
    Debug = 3,
    /// Every detail.
    Trace = 4,
}

/// A record's outcome, as [`Filter::on_result`](crate::Filter::on_result) gets it.
///
/// ```no_run
/// # fn f(result: framegate_guest::SinkResult) {
/// if !result.ok {
///     let why = String::from_utf8_lossy(&result.detail);
///     let line = format!("ticket {} failed: {why}", result.ticket);
///     framegate_guest::log(framegate_guest::Level::Warn, &line);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkResult {
    /// The ticket [`Conn::emit`] returned (or a subscription id whose start failed).
    pub ticket: u64,
    /// Whether the sink delivered the record.
    pub ok: bool,
    /// The broker's id of the record on success (may be empty), the reason on failure.
    pub detail: Vec<u8>,
    /// The context given to [`Conn::emit`].
    pub context: Vec<u8>,
}

/// Extras of a record for [`Conn::emit_with`].
///
/// ```
/// use framegate_guest::Record;
/// let record = Record {
///     key: Some(b"user-1"),
///     headers: &[("source", b"edge")],
///     context: b"request 7",
/// };
/// # let _ = record;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    /// Records with the same key keep their order.
    pub key: Option<&'a [u8]>,
    /// Header names and values, for sinks that carry headers.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Bytes that come back with the result, so a filter needs to remember nothing.
    pub context: &'a [u8],
}

/// Encodes headers as the ABI wants them: (u32 LE length, bytes) for each name and value.
///
/// ```
/// let raw = framegate_guest::encode_headers(&[("a", b"1")]);
/// assert_eq!(raw, [1, 0, 0, 0, b'a', 1, 0, 0, 0, b'1']);
/// ```
pub fn encode_headers(headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut raw = Vec::new();
    for (name, value) in headers {
        for part in [name.as_bytes(), value] {
            raw.extend_from_slice(&(part.len() as u32).to_le_bytes());
            raw.extend_from_slice(part);
        }
    }
    raw
}

/// The connection a hook is called for: its metadata and what a filter can do with it.
pub struct Conn {
    id: i64,
}

impl Conn {
    pub(crate) fn new(id: i64) -> Conn {
        Conn { id }
    }

    /// The connection's id, unique in the proxy's life.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) {
    /// framegate_guest::log(framegate_guest::Level::Info, &format!("conn {}", conn.id()));
    /// # }
    /// ```
    pub fn id(&self) -> u64 {
        self.id as u64
    }

    /// A metadata value: `path.NAME`, `query.NAME`, `header.NAME`, `peer`, `route`, `msg.id`,
    /// or what a filter set (docs/abi.md, "Metadata").
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) {
    /// let token = conn.meta("header.authorization");
    /// # }
    /// ```
    pub fn meta(&self, key: &str) -> Option<Vec<u8>> {
        // SAFETY: key is ours; the helper passes a buffer it owns and its length.
        sized(64, |dst, cap| unsafe {
            sys::meta_get(key.as_ptr(), len(key.as_bytes()), dst, cap)
        })
    }

    /// A metadata value as text (`None` when absent or not UTF-8).
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) {
    /// let room = conn.meta_str("path.room").unwrap_or_default();
    /// # }
    /// ```
    pub fn meta_str(&self, key: &str) -> Option<String> {
        String::from_utf8(self.meta(key)?).ok()
    }

    /// The names of the metadata keys that start with `prefix`, sorted: every request header
    /// with `"header."`, every key with `""`.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) {
    /// for key in conn.meta_keys("header.x-") {
    ///     let value = conn.meta(&key);
    /// }
    /// # }
    /// ```
    pub fn meta_keys(&self, prefix: &str) -> Vec<String> {
        // SAFETY: prefix is ours; the helper passes a buffer it owns and its length.
        let list = sized(256, |dst, cap| unsafe {
            sys::meta_keys(prefix.as_ptr(), len(prefix.as_bytes()), dst, cap)
        });
        names(&list.unwrap_or_default())
    }

    /// Sets a metadata key for the rest of the connection; later filters and sinks see it, and
    /// it survives a hot swap. Host keys are read-only ([`Error::NotAllowed`]).
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// conn.set_meta("user", b"alice")?;
    /// # Ok(()) }
    /// ```
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        // SAFETY: slices we own.
        check32(unsafe { sys::meta_set(key.as_ptr(), len(key.as_bytes()), value.as_ptr(), len(value)) })
    }

    /// Removes a metadata key a filter set.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// conn.delete_meta("user")?;
    /// # Ok(()) }
    /// ```
    pub fn delete_meta(&self, key: &str) -> Result<(), Error> {
        // SAFETY: a slice we own; length -1 means delete.
        check32(unsafe { sys::meta_set(key.as_ptr(), len(key.as_bytes()), std::ptr::null(), -1) })
    }

    /// Sends a text message straight to the client (not through other filters).
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// conn.send_text("{\"status\":200}")?;
    /// # Ok(()) }
    /// ```
    pub fn send_text(&self, text: &str) -> Result<(), Error> {
        self.send(Opcode::Text, text.as_bytes())
    }

    /// Sends a binary message straight to the client.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// conn.send_binary(&[0, 1, 2])?;
    /// # Ok(()) }
    /// ```
    pub fn send_binary(&self, bytes: &[u8]) -> Result<(), Error> {
        self.send(Opcode::Binary, bytes)
    }

    /// Sends a message of either kind straight to the client, after this hook returns and
    /// without passing other filters. Not in `on_close` ([`Error::NotAllowed`]).
    ///
    /// ```no_run
    /// # use framegate_guest::{Conn, Error, Message};
    /// # fn f(conn: &Conn, message: &mut Message) -> Result<(), Error> {
    /// let opcode = message.opcode();
    /// conn.send(opcode, message.payload())?;
    /// # Ok(()) }
    /// ```
    pub fn send(&self, opcode: Opcode, payload: &[u8]) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::send(opcode as i32, payload.as_ptr(), len(payload)) })
    }

    /// Enqueues a record to one of the route's sinks; the outcome comes to
    /// [`Filter::on_result`](crate::Filter::on_result) with the returned ticket.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// let ticket = conn.emit("audit", b"{\"event\":\"login\"}")?;
    /// # Ok(()) }
    /// ```
    pub fn emit(&self, sink: &str, payload: &[u8]) -> Result<u64, Error> {
        self.emit_with(sink, payload, Record::default())
    }

    /// [`Conn::emit`] with a key, headers and a context.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// use framegate_guest::Record;
    /// let record = Record { key: Some(b"user-1"), headers: &[("kind", b"click")], context: b"req-9" };
    /// conn.emit_with("events", b"{}", record)?;
    /// # Ok(()) }
    /// ```
    pub fn emit_with(&self, sink: &str, payload: &[u8], record: Record<'_>) -> Result<u64, Error> {
        let headers = encode_headers(record.headers);
        let key = record.key.unwrap_or_default();
        // SAFETY: slices we own.
        let ticket = unsafe {
            sys::emit(
                sink.as_ptr(),
                len(sink.as_bytes()),
                key.as_ptr(),
                len(key),
                payload.as_ptr(),
                len(payload),
                headers.as_ptr(),
                len(&headers),
                record.context.as_ptr(),
                len(record.context),
            )
        };
        Error::check(ticket).map(|t| t as u64)
    }

    /// Starts a flow from a source (`"bus"` with a topic name as spec) to this connection; its
    /// messages reach [`Filter::on_message`](crate::Filter::on_message) towards the client,
    /// with `msg.sub` and `msg.id` in the metadata. If the source cannot start it,
    /// [`Filter::on_result`](crate::Filter::on_result) gets the returned id, failed.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// let sub = conn.subscribe("bus", "news")?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, source: &str, spec: &str) -> Result<u64, Error> {
        // SAFETY: slices we own.
        let sub = unsafe {
            sys::subscribe(
                source.as_ptr(),
                len(source.as_bytes()),
                spec.as_ptr(),
                len(spec.as_bytes()),
            )
        };
        Error::check(sub).map(|s| s as u64)
    }

    /// Acknowledges a delivered message (`msg.id`) of a subscription.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn, sub: u64) -> Result<(), framegate_guest::Error> {
    /// if let Some(id) = conn.meta_str("msg.id") { conn.ack(sub, &id)?; }
    /// # Ok(()) }
    /// ```
    pub fn ack(&self, sub: u64, id: &str) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::ack(sub as i64, id.as_ptr(), len(id.as_bytes())) })
    }

    /// Refuses a delivered message; the source redelivers it as its broker does.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn, sub: u64) -> Result<(), framegate_guest::Error> {
    /// conn.nack(sub, "42")?;
    /// # Ok(()) }
    /// ```
    pub fn nack(&self, sub: u64, id: &str) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::nack(sub as i64, id.as_ptr(), len(id.as_bytes())) })
    }

    /// Stops a subscription.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn, sub: u64) -> Result<(), framegate_guest::Error> {
    /// conn.unsubscribe(sub)?;
    /// # Ok(()) }
    /// ```
    pub fn unsubscribe(&self, sub: u64) -> Result<(), Error> {
        // SAFETY: no pointers.
        check32(unsafe { sys::unsubscribe(sub as i64) })
    }

    /// Holds (`true`) or resumes (`false`) deliveries from this connection's subscriptions:
    /// held ones wait in their sources, which read their brokers no further (flow control,
    /// e.g. at most N unacked messages in flight).
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// conn.hold(true)?;
    /// # Ok(()) }
    /// ```
    pub fn hold(&self, on: bool) -> Result<(), Error> {
        // SAFETY: no pointers.
        check32(unsafe { sys::hold(i32::from(on)) })
    }

    /// A one-shot timer: [`Filter::on_timer`](crate::Filter::on_timer) is called with its id
    /// after `ms` milliseconds.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
    /// let timer = conn.set_timer(500)?;
    /// # Ok(()) }
    /// ```
    pub fn set_timer(&self, ms: u32) -> Result<u64, Error> {
        // SAFETY: no pointers.
        Error::check(unsafe { sys::set_timer(ms.min(i32::MAX as u32) as i32) }).map(|t| t as u64)
    }

    /// Cancels a timer that has not fired.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn, timer: u64) -> Result<(), framegate_guest::Error> {
    /// conn.cancel_timer(timer)?;
    /// # Ok(()) }
    /// ```
    pub fn cancel_timer(&self, timer: u64) -> Result<(), Error> {
        // SAFETY: no pointers.
        check32(unsafe { sys::cancel_timer(timer as i64) })
    }

    /// Closes the connection once this hook returns (code 1000-4999, reason up to 123 bytes).
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> framegate_guest::Verdict {
    /// let _ = conn.close(1008, "not allowed");
    /// framegate_guest::Verdict::Close
    /// # }
    /// ```
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::close(code.into(), reason.as_ptr(), len(reason.as_bytes())) })
    }

    /// In [`Filter::on_open`](crate::Filter::on_open): the HTTP status (400-599) and body of
    /// a refusal.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn) -> framegate_guest::Open {
    /// let _ = conn.reject(401, b"{\"error\":\"no token\"}");
    /// framegate_guest::Open::Reject
    /// # }
    /// ```
    pub fn reject(&self, status: u16, body: &[u8]) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::reject(status.into(), body.as_ptr(), len(body)) })
    }
}

/// The names of the route's sinks (what [`Conn::emit`] takes), sorted. Also in
/// [`Filter::init`](crate::Filter::init), to refuse a config that names a sink the route does
/// not have; empty there when the host checks a config outside any route.
///
/// ```no_run
/// let sinks = framegate_guest::sink_names();
/// if !sinks.iter().any(|s| s == "out") { /* refuse the config */ }
/// ```
pub fn sink_names() -> Vec<String> {
    // SAFETY: an empty prefix; the helper passes a buffer it owns and its length.
    let list = sized(64, |dst, cap| unsafe { sys::sink_names([].as_ptr(), 0, dst, cap) });
    names(&list.unwrap_or_default())
}

/// Milliseconds since the Unix epoch.
///
/// ```no_run
/// let now = framegate_guest::now_ms();
/// ```
pub fn now_ms() -> i64 {
    // SAFETY: no arguments.
    unsafe { sys::now_ms() }
}

/// Logs a line, tagged with the filter and the connection.
///
/// ```no_run
/// framegate_guest::log(framegate_guest::Level::Warn, "unexpected message");
/// ```
pub fn log(level: Level, line: &str) {
    // SAFETY: a slice we own.
    unsafe { sys::log(level as i32, line.as_ptr(), len(line.as_bytes())) };
}

/// Adds `value` (not negative: the host refuses that) to a counter, shown at /metrics as
/// `framegate_filter_custom_total{filter,name}`.
///
/// ```no_run
/// framegate_guest::count("rejected", 1.0);
/// ```
pub fn count(name: &str, value: f64) {
    metric(name, 0, value);
}

/// Sets a gauge, shown at /metrics as `framegate_filter_custom_gauge{filter,name}`.
///
/// ```no_run
/// framegate_guest::gauge("queue_depth", 3.0);
/// ```
pub fn gauge(name: &str, value: f64) {
    metric(name, 1, value);
}

/// Metrics are best effort, like logs: a refused one is not worth a filter's error path.
fn metric(name: &str, kind: i32, value: f64) {
    // SAFETY: a slice we own.
    unsafe { sys::metric(name.as_ptr(), len(name.as_bytes()), kind, value) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_encoding() {
        let raw = encode_headers(&[("ab", b"x"), ("c", b"")]);
        assert_eq!(
            raw,
            [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'x', 1, 0, 0, 0, b'c', 0, 0, 0, 0]
        );
    }
}
