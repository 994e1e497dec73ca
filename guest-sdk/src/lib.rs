// The crate root owns the `Filter` trait, the hooks' answers (`Verdict`, `Open`), the host's
// error codes and reading host buffers; `conn`, `message`, `export` and `sys` own the rest.

//! Write framegate filters in Rust, with no `unsafe`.
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

#![warn(missing_docs)]

mod conn;
#[doc(hidden)]
pub mod export;
mod message;
#[cfg(all(feature = "native-host", not(target_arch = "wasm32")))]
pub mod native;
pub mod store;
pub mod sys;

pub use conn::{Conn, Level, Record, SinkResult, count, encode_headers, gauge, log, now_ms, sink_names};
pub use message::{Direction, Message, Opcode};

use std::fmt;

/// An error code from the host (docs/abi.md, "Imports").
///
/// ```no_run
/// # fn f(conn: &framegate_guest::Conn) {
/// use framegate_guest::Error;
/// match conn.set_meta("path.room", b"x") {
///     Err(Error::NotAllowed) => { /* host keys are read-only */ }
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No such metadata key; a buffer not set in this hook.
    NotFound,
    /// An unknown buffer, opcode, level or kind; a value out of its range; text that is not UTF-8.
    BadArgument,
    /// Not allowed in this hook, or a read-only metadata key.
    NotAllowed,
    /// No sink or source of that name on this route.
    UnknownTarget,
    /// Over the route's message size limit.
    TooLarge,
    /// Too many timers or subscriptions on the connection; the module's store is full.
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

/// The variant's name (`NotFound`, ...): short, and what the probe filter's tests compare.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// Maps an import's `i32` answer: `Ok` for `>= 0`.
fn check32(code: i32) -> Result<(), Error> {
    Error::check(code.into()).map(drop)
}

/// A length as the ABI passes it (guest memory is far below 2 GiB in practice).
fn len(bytes: &[u8]) -> i32 {
    bytes.len() as i32
}

/// A value the host copies with a `(dst, cap) -> whole length` import: asked again with room
/// for all of it when `first` bytes were too few; `None` when the import answers an error.
fn sized(first: usize, mut copy: impl FnMut(*mut u8, i32) -> i32) -> Option<Vec<u8>> {
    let mut value = vec![0u8; first];
    loop {
        let whole = copy(value.as_mut_ptr(), len(&value));
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

/// Decodes a list of names as the host encodes it (u32 LE length, then the name, for each).
fn names(list: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = list;
    while let Some((head, tail)) = rest.split_first_chunk::<4>() {
        let n = (u32::from_le_bytes(*head) as usize).min(tail.len());
        names.push(String::from_utf8_lossy(&tail[..n]).into_owned());
        rest = &tail[n..];
    }
    names
}

/// Appends the first `len` bytes of a host buffer to `buffer`, without zeroing them first:
/// this runs on every message of filters that read payloads.
fn read_buffer_into(buf: i32, len: usize, buffer: &mut Vec<u8>) {
    buffer.reserve(len);
    let start = buffer.len();
    // SAFETY: `reserve` left room for `len` bytes after `start`; the host wrote the
    // `n <= len` bytes it reports (a negative answer writes nothing).
    unsafe {
        let n = sys::read(buf, 0, buffer.spare_capacity_mut().as_mut_ptr().cast(), len as i32);
        buffer.set_len(start + n.clamp(0, len as i32) as usize);
    }
}

/// A whole host buffer of `len` bytes.
fn read_buffer(buf: i32, len: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    read_buffer_into(buf, len, &mut bytes);
    bytes
}

/// What becomes of a message after [`Filter::on_message`].
///
/// ```no_run
/// # fn f(message: &framegate_guest::Message) -> framegate_guest::Verdict {
/// use framegate_guest::Verdict;
/// if message.len() > 1 << 20 { Verdict::Close } else { Verdict::Continue }
/// # }
/// ```
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
///
/// ```no_run
/// # fn f(conn: &framegate_guest::Conn) -> framegate_guest::Open {
/// use framegate_guest::Open;
/// if conn.meta("header.authorization").is_some() { Open::Accept } else { Open::Reject }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Let the client in (later filters are asked too).
    Accept,
    /// Refuse, with the status and body given to [`Conn::reject`] (403 otherwise).
    Reject,
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
    /// Once per instance, with the route's filter config as JSON (`{}` when it has none).
    /// `Err` refuses it: the reason is logged and shown in the load error.
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// A client asks to connect; metadata (path, query, headers, peer) is readable.
    fn on_open(&mut self, conn: &Conn) -> Open {
        let _ = conn;
        Open::Accept
    }

    /// One whole message, either way. The default lets it through unchanged.
    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        let _ = (conn, message);
        Verdict::Continue
    }

    /// A record this filter emitted reached its end (or a subscription failed to start).
    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        let _ = (conn, result);
    }

    /// A timer this filter set fired.
    fn on_timer(&mut self, conn: &Conn, timer: u64) {
        let _ = (conn, timer);
    }

    /// The connection ended with `code` (1005 if the client's close frame had none, 1006 if it
    /// broke without one). Metadata is still readable; sending is not.
    fn on_close(&mut self, conn: &Conn, code: u16) {
        let _ = (conn, code);
    }
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
        assert_eq!(Error::TooLarge.to_string(), "TooLarge");
    }
}
