//! The message `fg_on_message` is called with: its direction and opcode, a payload read from
//! the host only when asked, and `replace`.

use crate::{Error, check32, len, read_buffer, read_buffer_into, sys};

/// Which way a message travels.
///
/// ```no_run
/// # fn f(message: &framegate_guest::Message) {
/// use framegate_guest::Direction;
/// let towards = match message.direction() {
///     Direction::FromClient => "sinks",
///     Direction::ToClient => "client",
/// };
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client, towards the route's sinks (`dir` 0).
    FromClient,
    /// Towards the client: from a subscription or an upstream server (`dir` 1).
    ToClient,
}

/// A WebSocket data message type.
///
/// ```no_run
/// # fn f(conn: &framegate_guest::Conn) -> Result<(), framegate_guest::Error> {
/// use framegate_guest::Opcode;
/// conn.send(Opcode::Binary, &[1, 2, 3])?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// UTF-8 text (opcode 1).
    Text = 1,
    /// Any bytes (opcode 2).
    Binary = 2,
}

/// The message a hook is called with. The payload stays in the host until it is read.
///
/// ```no_run
/// # use framegate_guest::{Message, Verdict};
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
    /// The payload's length in the host, as replaced so far.
    len: usize,
    /// The payload, once read; `None` again after `replace` (the host has the new bytes).
    payload: Option<Vec<u8>>,
}

impl Message {
    pub(crate) fn new(dir: i32, opcode: i32, len: i32) -> Message {
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
    /// let from_a_source = message.direction() == Direction::ToClient;
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
        self.len
    }

    /// Whether the payload is empty.
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// let nothing = message.is_empty();
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload (read from the host on first use, then kept).
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

    /// Appends the payload to `buffer`, reusing its allocation: for filters that see every
    /// message and want no allocation per call (clear the buffer first to get the payload alone).
    ///
    /// ```no_run
    /// # fn f(message: &framegate_guest::Message) {
    /// let mut buffer = b"> ".to_vec();
    /// message.append_payload(&mut buffer);
    /// # }
    /// ```
    pub fn append_payload(&self, buffer: &mut Vec<u8>) {
        match &self.payload {
            Some(payload) => buffer.extend_from_slice(payload),
            None => read_buffer_into(sys::BUF_PAYLOAD, self.len, buffer),
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
    /// A text message must stay UTF-8 ([`Error::BadArgument`] otherwise); the route's size
    /// limit applies ([`Error::TooLarge`]).
    ///
    /// ```no_run
    /// # fn f(message: &mut framegate_guest::Message) -> Result<(), framegate_guest::Error> {
    /// message.replace(b"{\"redacted\":true}")?;
    /// # Ok(()) }
    /// ```
    pub fn replace(&mut self, payload: &[u8]) -> Result<(), Error> {
        // SAFETY: a slice we own.
        check32(unsafe { sys::replace(payload.as_ptr(), len(payload)) })?;
        // No copy kept: the host has the new bytes, and most filters return right after.
        self.len = payload.len();
        self.payload = None;
        Ok(())
    }
}
