//! Write [framegate](https://github.com/) filters in Rust, with no `unsafe`.
//!
//! A filter is a type implementing [`Filter`]; [`export_filter!`] turns it into the exports of
//! framegate's filter ABI v1 (docs/abi.md). Build it for `wasm32-unknown-unknown` as a
//! `cdylib`, drop the `.wasm` into framegate's filter folder, and name it in a route.
//!
//! ```no_run
//! use framegate_guest::{export_filter, Conn, Filter, Message, Verdict};
//!
//! /// Answers every client message with its length.
//! #[derive(Default)]
//! struct Length;
//!
//! impl Filter for Length {
//!     fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
//!         if message.from_client() {
//!             let _ = conn.send_text(&message.len().to_string());
//!             return Verdict::Drop;
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! export_filter!(Length);
//! ```
//!
//! Instances are pooled and any instance may serve any connection: keep per-connection state in
//! the host with [`Conn::set_meta`], not in the filter value (which may be a fresh one).

pub mod sys;

use std::fmt;

/// An error code from the host (docs/abi.md, "Imports").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No such metadata key; a buffer not set in this hook.
    NotFound,
    /// An unknown buffer, opcode, level or kind; text that is not UTF-8.
    BadArgument,
    /// Not allowed in this hook, or a read-only metadata key.
    NotAllowed,
    /// No sink or source of that name on this route.
    UnknownTarget,
    /// Over the route's message size limit.
    TooLarge,
    /// Too many timers or subscriptions on the connection.
    Limit,
    /// A code this SDK does not know.
    Other(i64),
}

impl Error {
    fn check(code: i64) -> Result<i64, Error> {
        match code {
            c if c >= 0 => Ok(c),
            -1 => Err(Error::NotFound),
            -2 => Err(Error::BadArgument),
            -3 => Err(Error::NotAllowed),
            -4 => Err(Error::UnknownTarget),
            -5 => Err(Error::TooLarge),
            -6 => Err(Error::Limit),
            c => Err(Error::Other(c)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Error {}

fn check32(code: i32) -> Result<(), Error> {
    Error::check(code.into()).map(drop)
}

fn len(bytes: &[u8]) -> i32 {
    bytes.len() as i32
}

/// Reads a whole host buffer.
fn read_buffer(buf: i32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    // SAFETY: `bytes` is ours, `len` bytes long.
    let n = unsafe { sys::read(buf, 0, bytes.as_mut_ptr(), len as i32) };
    bytes.truncate(n.max(0) as usize);
    bytes
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client, towards the route's sinks.
    FromClient,
    /// Towards the client: from a subscription or an upstream server.
    ToClient,
}

/// A WebSocket data frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 1,
    Binary = 2,
}

/// What becomes of a message after [`Filter::on_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next filter, then the sinks (or the client), as replaced if it was.
    Continue,
    /// Nobody after this filter sees it.
    Drop,
    /// Close the connection (code and reason from [`Conn::close`], 1000 otherwise).
    Close,
}

/// The answer to a client asking to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    Accept,
    /// Refuse, with the status and body given to [`Conn::reject`] (403 otherwise).
    Reject,
}

/// Log levels, for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// The message a hook is called with. The payload is read from the host on first use.
///
/// ```no_run
/// # use framegate_guest::{Conn, Message, Verdict};
/// fn shout(message: &mut Message) -> Verdict {
///     if let Some(text) = message.text() {
///         let loud = text.to_uppercase();
///         if message.replace(loud.as_bytes()).is_err() {
///             return Verdict::Close;
///         }
///     }
///     Verdict::Continue
/// }
/// ```
pub struct Message {
    direction: Direction,
    opcode: Opcode,
    len: usize,
    payload: Option<Vec<u8>>,
}

impl Message {
    #[doc(hidden)]
    pub fn new(dir: i32, opcode: i32, len: i32) -> Message {
        Message {
            direction: if dir == 0 {
                Direction::FromClient
            } else {
                Direction::ToClient
            },
            opcode: if opcode == 1 { Opcode::Text } else { Opcode::Binary },
            len: len.max(0) as usize,
            payload: None,
        }
    }

    /// Which way the message travels.
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// use framegate_guest::Direction;
    /// assert_eq!(message.direction(), Direction::FromClient);
    /// # }
    /// ```
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the message comes from the client (rather than going to it).
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// if message.from_client() { /* a message for the sinks */ }
    /// # }
    /// ```
    pub fn from_client(&self) -> bool {
        self.direction == Direction::FromClient
    }

    /// Text or binary.
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// use framegate_guest::Opcode;
    /// let is_text = message.opcode() == Opcode::Text;
    /// # }
    /// ```
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// The payload's length in bytes, without reading it.
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// let too_long = message.len() > 4096;
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.payload.as_ref().map_or(self.len, Vec::len)
    }

    /// Whether the payload is empty.
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// let nothing = message.is_empty();
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload (read from the host once, then kept).
    ///
    /// ```no_run
    /// # fn f(message: &mut framegate_guest::Message) {
    /// let starts_with_brace = message.payload().first() == Some(&b'{');
    /// # }
    /// ```
    pub fn payload(&mut self) -> &[u8] {
        let len = self.len;
        self.payload.get_or_insert_with(|| read_buffer(sys::BUF_PAYLOAD, len))
    }

    /// Copies the payload into `buffer` (cleared first), reusing its allocation: for filters
    /// that see every message and want no allocation per call.
    ///
    /// ```no_run
    /// # fn f(message: &mut framegate_guest::Message) {
    /// let mut buffer = Vec::new();
    /// message.read_into(&mut buffer);
    /// # }
    /// ```
    pub fn read_into(&self, buffer: &mut Vec<u8>) {
        buffer.clear();
        match &self.payload {
            Some(payload) => buffer.extend_from_slice(payload),
            None => {
                buffer.resize(self.len, 0);
                // SAFETY: `buffer` is ours, `len` bytes long.
                let n = unsafe { sys::read(sys::BUF_PAYLOAD, 0, buffer.as_mut_ptr(), self.len as i32) };
                buffer.truncate(n.max(0) as usize);
            }
        }
    }

    /// The payload as text, when it is a text message.
    ///
    /// ```no_run
    /// # fn f(message: &mut framegate_guest::Message) {
    /// if let Some(text) = message.text() { let _words = text.split_whitespace().count(); }
    /// # }
    /// ```
    pub fn text(&mut self) -> Option<&str> {
        if self.opcode != Opcode::Text {
            return None;
        }
        std::str::from_utf8(self.payload()).ok()
    }

    /// Replaces the message for the filters after this one and the sinks (or the client).
    /// A text message must stay UTF-8 ([`Error::BadArgument`] otherwise).
    ///
    /// ```no_run
    /// # fn f(message: &mut framegate_guest::Message) -> Result<(), framegate_guest::Error> {
    /// message.replace(b"{\"redacted\":true}")?;
    /// # Ok(()) }
    /// ```
    pub fn replace(&mut self, payload: &[u8]) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::replace(payload.as_ptr(), len(payload)) })?;
        self.payload = Some(payload.to_vec());
        Ok(())
    }
}

/// A record's outcome, as [`Filter::on_result`] gets it.
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
    #[doc(hidden)]
    pub fn new(id: i64) -> Conn {
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
        let mut value = vec![0u8; 64];
        loop {
            // SAFETY: key and value are ours; `cap` is value's length.
            let whole = unsafe { sys::meta_get(key.as_ptr(), len(key.as_bytes()), value.as_mut_ptr(), len(&value)) };
            if whole < 0 {
                return None;
            }
            let whole = whole as usize;
            if whole <= value.len() {
                value.truncate(whole);
                return Some(value);
            }
            value.resize(whole, 0);
        }
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

    /// Sends a message of either kind straight to the client.
    ///
    /// ```no_run
    /// # fn f(conn: &framegate_guest::Conn, message: &mut framegate_guest::Message) -> Result<(), framegate_guest::Error> {
    /// let opcode = message.opcode();
    /// conn.send(opcode, message.payload())?;
    /// # Ok(()) }
    /// ```
    pub fn send(&self, opcode: Opcode, payload: &[u8]) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::send(opcode as i32, payload.as_ptr(), len(payload)) })
    }

    /// Enqueues a record to one of the route's sinks; the outcome comes to
    /// [`Filter::on_result`] with the returned ticket.
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
    /// messages reach [`Filter::on_message`] towards the client, with `msg.sub` and `msg.id`.
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

    /// A one-shot timer: [`Filter::on_timer`] is called with its id after `ms` milliseconds.
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

    /// In [`Filter::on_open`]: the HTTP status (400-599) and body of a refusal.
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

/// Adds to a counter, shown at /metrics as `framegate_filter_custom_total{filter,name}`.
///
/// ```no_run
/// framegate_guest::count("rejected", 1.0);
/// ```
pub fn count(name: &str, value: f64) {
    // SAFETY: a slice we own.
    unsafe { sys::metric(name.as_ptr(), len(name.as_bytes()), 0, value) };
}

/// Sets a gauge, shown at /metrics as `framegate_filter_custom_gauge{filter,name}`.
///
/// ```no_run
/// framegate_guest::gauge("queue_depth", 3.0);
/// ```
pub fn gauge(name: &str, value: f64) {
    // SAFETY: a slice we own.
    unsafe { sys::metric(name.as_ptr(), len(name.as_bytes()), 1, value) };
}

/// A filter. Every hook has a default: implement the ones you need.
///
/// ```no_run
/// use framegate_guest::{export_filter, Conn, Filter, Message, Open, Verdict};
///
/// /// Lets in only clients with `?token=secret`, and tags what they send.
/// #[derive(Default)]
/// struct Gate {
///     tag: String,
/// }
///
/// impl Filter for Gate {
///     fn init(&mut self, config: &[u8]) -> Result<(), String> {
///         self.tag = String::from_utf8(config.to_vec()).map_err(|e| e.to_string())?;
///         Ok(())
///     }
///
///     fn on_open(&mut self, conn: &Conn) -> Open {
///         if conn.meta_str("query.token").as_deref() == Some("secret") {
///             Open::Accept
///         } else {
///             let _ = conn.reject(401, b"token needed");
///             Open::Reject
///         }
///     }
///
///     fn on_message(&mut self, _conn: &Conn, message: &mut Message) -> Verdict {
///         let tagged = [self.tag.as_bytes(), message.payload()].concat();
///         match message.replace(&tagged) {
///             Ok(()) => Verdict::Continue,
///             Err(_) => Verdict::Drop,
///         }
///     }
/// }
///
/// export_filter!(Gate);
/// ```
pub trait Filter: Default + 'static {
    /// Once per instance, with the route's filter config as JSON. `Err` refuses it (the
    /// reason is logged and shown in the load error).
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// A client asks to connect; metadata (path, query, headers, peer) is readable.
    fn on_open(&mut self, conn: &Conn) -> Open {
        let _ = conn;
        Open::Accept
    }

    /// One whole message, either way.
    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict;

    /// A record this filter emitted reached its end.
    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        let _ = (conn, result);
    }

    /// A timer this filter set fired.
    fn on_timer(&mut self, conn: &Conn, timer: u64) {
        let _ = (conn, timer);
    }

    /// The connection ended with `code` (1006 if it broke without one).
    fn on_close(&mut self, conn: &Conn, code: u16) {
        let _ = (conn, code);
    }
}

/// What [`export_filter!`] expands to; not for direct use.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub type Slot<F> = LocalKey<RefCell<Option<F>>>;

    fn with<F: Filter, R>(slot: &'static Slot<F>, f: impl FnOnce(&mut F) -> R) -> R {
        slot.with(|cell| f(cell.borrow_mut().get_or_insert_with(F::default)))
    }

    pub fn init<F: Filter>(slot: &'static Slot<F>, config_len: i32) -> i32 {
        let config = read_buffer(sys::BUF_CONFIG, config_len.max(0) as usize);
        let mut filter = F::default();
        match filter.init(&config) {
            Ok(()) => {
                slot.with(|cell| *cell.borrow_mut() = Some(filter));
                0
            }
            Err(reason) => {
                log(Level::Error, &reason);
                1
            }
        }
    }

    pub fn on_open<F: Filter>(slot: &'static Slot<F>, conn: i64) -> i32 {
        with(slot, |f| match f.on_open(&Conn::new(conn)) {
            Open::Accept => 0,
            Open::Reject => 1,
        })
    }

    pub fn on_message<F: Filter>(slot: &'static Slot<F>, conn: i64, dir: i32, opcode: i32, len: i32) -> i32 {
        let mut message = Message::new(dir, opcode, len);
        with(slot, |f| match f.on_message(&Conn::new(conn), &mut message) {
            Verdict::Continue => 0,
            Verdict::Drop => 1,
            Verdict::Close => 2,
        })
    }

    pub fn on_result<F: Filter>(slot: &'static Slot<F>, conn: i64, ticket: i64, status: i32, len: i32) {
        let detail = read_buffer(sys::BUF_RESULT, len.max(0) as usize);
        // SAFETY: no pointers.
        let context_len = unsafe { sys::buf_len(sys::BUF_CONTEXT) }.max(0) as usize;
        let result = SinkResult {
            ticket: ticket as u64,
            ok: status == 0,
            detail,
            context: read_buffer(sys::BUF_CONTEXT, context_len),
        };
        with(slot, |f| f.on_result(&Conn::new(conn), result));
    }

    pub fn on_timer<F: Filter>(slot: &'static Slot<F>, conn: i64, timer: i64) {
        with(slot, |f| f.on_timer(&Conn::new(conn), timer as u64));
    }

    pub fn on_close<F: Filter>(slot: &'static Slot<F>, conn: i64, code: i32) {
        with(slot, |f| f.on_close(&Conn::new(conn), code as u16));
    }
}

/// Exports a [`Filter`] type as a framegate module: every hook of ABI v1, and the
/// `fg_abi_v1` marker. Use it once per crate, on a `Default` type.
///
/// ```no_run
/// use framegate_guest::{export_filter, Conn, Filter, Message, Verdict};
///
/// #[derive(Default)]
/// struct PassThrough;
///
/// impl Filter for PassThrough {
///     fn on_message(&mut self, _conn: &Conn, _message: &mut Message) -> Verdict {
///         Verdict::Continue
///     }
/// }
///
/// export_filter!(PassThrough);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        ::std::thread_local! {
            static FRAMEGATE_FILTER: ::std::cell::RefCell<::std::option::Option<$filter>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_abi_v1() {}

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_init(config_len: i32) -> i32 {
            $crate::__private::init(&FRAMEGATE_FILTER, config_len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_open(conn: i64) -> i32 {
            $crate::__private::on_open(&FRAMEGATE_FILTER, conn)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32) -> i32 {
            $crate::__private::on_message(&FRAMEGATE_FILTER, conn, dir, opcode, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_result(conn: i64, ticket: i64, status: i32, len: i32) {
            $crate::__private::on_result(&FRAMEGATE_FILTER, conn, ticket, status, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_timer(conn: i64, timer: i64) {
            $crate::__private::on_timer(&FRAMEGATE_FILTER, conn, timer)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_close(conn: i64, code: i32) {
            $crate::__private::on_close(&FRAMEGATE_FILTER, conn, code)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes() {
        assert_eq!(Error::check(5), Ok(5));
        assert_eq!(Error::check(-1), Err(Error::NotFound));
        assert_eq!(Error::check(-4), Err(Error::UnknownTarget));
        assert_eq!(Error::check(-99), Err(Error::Other(-99)));
    }

    #[test]
    fn headers_encoding() {
        let raw = encode_headers(&[("ab", b"x"), ("c", b"")]);
        assert_eq!(
            raw,
            [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'x', 1, 0, 0, 0, b'c', 0, 0, 0, 0]
        );
    }
}
