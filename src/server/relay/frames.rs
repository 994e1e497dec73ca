//! The frame relay in place, for routes with no filters and a single `ws://` sink: frames go on
//! as they came, client frames still masked and upstream frames as they are, read and written in
//! large chunks. Only frame headers are read: to count messages, keep framegate's message limit,
//! refuse what RFC 6455 forbids (close 1002), and know where a frame ends, so that framegate's
//! own pings and close frames go in between two frames. Payloads are never unmasked or copied
//! into messages; text is not checked for UTF-8 (the endpoints do that).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::route::Route;

/// How long a closing relay waits for the far end to finish its close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A ping with no payload, from the server side (unmasked).
const PING: [u8; 2] = [0x89, 0x00];

/// Why framegate closes a relayed connection: the code and reason written to both ends.
pub type Close = (u16, &'static str);

/// Shared by both directions: the first close decided, and a token that tells the other (a
/// child of the proxy's shutdown token, so one token covers both).
pub struct Closing {
    token: CancellationToken,
    why: std::sync::Mutex<Option<Close>>,
}

impl Closing {
    pub fn new(shutdown: &CancellationToken) -> Closing {
        Closing {
            token: shutdown.child_token(),
            why: std::sync::Mutex::new(None),
        }
    }

    fn close(&self, why: Close) {
        self.why.lock().expect("never poisoned").get_or_insert(why);
        self.token.cancel();
    }

    /// The close decided; cancelled with no reason of its own, the proxy is shutting down.
    fn why(&self) -> Close {
        self.why
            .lock()
            .expect("never poisoned")
            .unwrap_or((1001, "server shutting down"))
    }
}

/// What is known of one direction's frames: where the current frame ends, and the message it
/// belongs to.
#[derive(Debug)]
pub struct Frames {
    /// Frames from the client must be masked; frames from the upstream must not be.
    from_client: bool,
    max_message_size: u64,
    /// Bytes of the current frame's payload still to pass; 0 between two frames.
    payload_left: u64,
    /// A fragmented data message is open: continuations may follow, a new message may not.
    in_message: bool,
    message_len: u64,
    /// Whole data messages and their payload bytes, since last taken.
    messages: u64,
    bytes: u64,
    /// A close frame went by: this direction carries nothing more of framegate's own.
    closed: bool,
    /// permessage-deflate was agreed: RSV1 may mark the first frame of a data message.
    deflate: bool,
}

impl Frames {
    /// `max_message_size` applies to the payload as it passes: compressed, with `deflate`.
    pub fn new(from_client: bool, max_message_size: usize, deflate: bool) -> Frames {
        Frames {
            from_client,
            max_message_size: max_message_size as u64,
            payload_left: 0,
            in_message: false,
            message_len: 0,
            messages: 0,
            bytes: 0,
            closed: false,
            deflate,
        }
    }

    /// Whether what went on so far ends at a frame's end, where a frame of framegate's own fits.
    fn at_boundary(&self) -> bool {
        self.payload_left == 0 && !self.closed
    }

    /// Reads the headers in `data`, which starts where the last scan stopped (within a payload,
    /// or at a header not read yet). Returns how many
    /// bytes may go on (all but an incomplete header at the end, or up to a header that breaks
    /// the rules), and the close that such a header calls for.
    pub fn scan(&mut self, data: &[u8]) -> (usize, Option<Close>) {
        let mut at = 0;
        loop {
            let passing = self.payload_left.min((data.len() - at) as u64);
            at += passing as usize;
            self.payload_left -= passing;
            if at == data.len() {
                return (at, None);
            }
            match self.header(&data[at..]) {
                Ok(Some(length)) => at += length,
                Ok(None) => return (at, None),
                Err(close) => return (at, Some(close)),
            }
        }
    }

    /// One frame header at the start of `data`: its length, `None` if not all there yet.
    fn header(&mut self, data: &[u8]) -> Result<Option<usize>, Close> {
        let [first, second, ..] = *data else {
            return Ok(None);
        };
        let (fin, rsv, opcode) = (first & 0x80 != 0, first & 0x70, first & 0x0f);
        let masked = second & 0x80 != 0;
        let (payload, mut length) = match second & 0x7f {
            126 => match data.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match data.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().expect("eight bytes")), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if masked {
            length += 4;
        }
        if data.len() < length {
            return Ok(None);
        }
        // RFC 7692: RSV1 on the first frame of a compressed message, nowhere else.
        let compressed_start = self.deflate && rsv == 0x40 && matches!(opcode, 0x1 | 0x2);
        if rsv != 0 && !compressed_start {
            return Err((1002, "reserved bits set with no extension"));
        }
        if masked != self.from_client {
            return Err((
                1002,
                if self.from_client {
                    "unmasked client frame"
                } else {
                    "masked server frame"
                },
            ));
        }
        match opcode {
            0x8..=0xa if !fin || payload > 125 => return Err((1002, "control frame fragmented or too long")),
            0x8 => self.closed = true,
            0x9 | 0xa => {}
            0x0..=0x2 => {
                if (opcode == 0) != self.in_message {
                    return Err((1002, "continuation out of place"));
                }
                if opcode != 0 {
                    self.message_len = 0;
                }
                self.message_len = self.message_len.saturating_add(payload);
                if self.message_len > self.max_message_size {
                    return Err((1009, "message too big"));
                }
                self.in_message = !fin;
                self.bytes += payload;
                if fin {
                    self.messages += 1;
                }
            }
            _ => return Err((1002, "unknown opcode")),
        }
        self.payload_left = payload;
        Ok(Some(length))
    }
}

/// A close frame of framegate's own; masked with `mask` when it goes to the upstream.
fn close_frame((code, reason): Close, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    let mut frame = vec![0x88, payload.len() as u8];
    if let Some(key) = mask {
        frame[1] |= 0x80;
        frame.extend_from_slice(&key);
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    frame.extend_from_slice(&payload);
    frame
}

/// What one direction does besides passing frames on.
#[derive(Default)]
pub struct Duties {
    /// Ping the far end this often (towards the client).
    pub ping: Option<Interval>,
    /// Close when nothing was read for this long (from the client).
    pub idle: Option<Duration>,
    /// Written when the reader ends without a close frame (the upstream went away).
    pub on_end: Option<Close>,
    /// The key of the frames framegate writes towards the upstream.
    pub mask: Option<[u8; 4]>,
}

/// One direction of a relayed connection, run as a task of its own: a wake-up polls only the
/// direction that has something to do.
pub struct Flow {
    pub frames: Frames,
    pub duties: Duties,
    pub route: Arc<Route>,
    /// Towards the client: `messages_out`; from it: `messages_in`.
    pub inbound: bool,
}

impl Flow {
    /// Passes frames from `reader` to `writer` until the reader ends or either direction closes.
    /// `ahead` is what was read of the reader before (with the upgrade).
    pub async fn run<R, W>(mut self, ahead: Bytes, mut reader: R, mut writer: W, closing: Arc<Closing>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let closing = &*closing;
        let mut buffer = vec![0u8; super::RELAY_BUFFER.max(ahead.len())];
        buffer[..ahead.len()].copy_from_slice(&ahead);
        let mut held = match ahead.len() {
            0 => 0,
            filled => match self.pass(&mut buffer, filled, &mut writer, closing).await {
                Some(held) => held,
                None => return self.finish(reader, writer, buffer, closing).await,
            },
        };
        // Made once, not at every read: it registers a waiter when first polled.
        let stop = closing.token.cancelled();
        let idle = tokio::time::sleep(self.duties.idle.unwrap_or(Duration::MAX / 4));
        tokio::pin!(stop, idle);
        loop {
            // Biased: once a close is decided, `stop` is ready and comes before the branch that
            // decided it, which is not polled again.
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = &mut idle, if self.duties.idle.is_some() => closing.close((1001, "idle timeout")),
                _ = async { self.duties.ping.as_mut().unwrap().tick().await }, if self.duties.ping.is_some() => {
                    if self.frames.at_boundary() && writer.write_all(&PING).await.is_err() {
                        closing.close((1001, "connection lost"));
                    }
                }
                read = reader.read(&mut buffer[held..]) => {
                    let Ok(read @ 1..) = read else {
                        // The reader ended: tell the far end (with a close frame if it got none).
                        if let Some(close) = self.duties.on_end.filter(|_| self.frames.at_boundary()) {
                            let _ = writer.write_all(&close_frame(close, self.duties.mask)).await;
                        }
                        let _ = writer.shutdown().await;
                        return;
                    };
                    if let Some(limit) = self.duties.idle {
                        idle.as_mut().reset(Instant::now() + limit);
                    }
                    match self.pass(&mut buffer, held + read, &mut writer, closing).await {
                        Some(now_held) => held = now_held,
                        None => break,
                    }
                }
            }
        }
        self.finish(reader, writer, buffer, closing).await;
    }

    /// Passes on what `buffer[..filled]` holds of whole headers and payloads, and keeps an
    /// incomplete header at its start; returns that header's length, or `None` to close.
    async fn pass<W: AsyncWrite + Unpin>(
        &mut self,
        buffer: &mut [u8],
        filled: usize,
        writer: &mut W,
        closing: &Closing,
    ) -> Option<usize> {
        // Held bytes at the start are a header the last scan could not read yet.
        let (passing, broken) = self.frames.scan(&buffer[..filled]);
        if writer.write_all(&buffer[..passing]).await.is_err() {
            closing.close((1001, "connection lost"));
            return None;
        }
        self.count();
        if let Some(broken) = broken {
            closing.close(broken);
            return None;
        }
        buffer.copy_within(passing..filled, 0);
        Some(filled - passing)
    }

    /// Closing: a close frame to this direction's far end, then a wait for it to finish.
    async fn finish<R, W>(&self, mut reader: R, mut writer: W, mut buffer: Vec<u8>, closing: &Closing)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.frames.at_boundary() {
            let _ = writer.write_all(&close_frame(closing.why(), self.duties.mask)).await;
        }
        let _ = writer.shutdown().await;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(1..) = reader.read(&mut buffer).await {}
        })
        .await;
    }

    fn count(&mut self) {
        let metrics = &self.route.metrics;
        let (messages, bytes) = if self.inbound {
            (&metrics.messages_in, &metrics.bytes_in)
        } else {
            (&metrics.messages_out, &metrics.bytes_out)
        };
        messages.inc_by(std::mem::take(&mut self.frames.messages));
        bytes.inc_by(std::mem::take(&mut self.frames.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn whole_and_split_frames_pass_and_are_counted() {
        let mut stream = client_frame(0x81, b"hello");
        stream.extend(client_frame(0x02, &[7; 300]));
        stream.extend(client_frame(0x89, b""));
        stream.extend(client_frame(0x80, &[8; 70_000]));
        let mut frames = Frames::new(true, 1 << 20, false);
        // Fed byte by byte, nothing past an incomplete header is let through.
        let (mut sent, mut held) = (0, Vec::new());
        for byte in &stream {
            held.push(*byte);
            let (passing, broken) = frames.scan(&held);
            assert_eq!(broken, None);
            sent += passing;
            held.drain(..passing);
        }
        assert_eq!((sent, held.len()), (stream.len(), 0));
        assert_eq!((frames.messages, frames.bytes), (2, 5 + 300 + 70_000));
        assert!(frames.at_boundary());
    }

    #[test]
    fn what_rfc_6455_forbids_stops_at_its_header() {
        let cases: [(Vec<u8>, Close, usize); 6] = [
            (
                vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'],
                (1002, "unmasked client frame"),
                0,
            ),
            (
                client_frame(0xc1, b"x"),
                (1002, "reserved bits set with no extension"),
                0,
            ),
            (client_frame(0x83, b""), (1002, "unknown opcode"), 0),
            (
                client_frame(0x09, b""),
                (1002, "control frame fragmented or too long"),
                0,
            ),
            (client_frame(0x80, b"x"), (1002, "continuation out of place"), 0),
            (
                [client_frame(0x01, &[0; 60]), client_frame(0x80, &[0; 60])].concat(),
                (1009, "message too big"),
                66,
            ),
        ];
        for (stream, close, passing) in cases {
            let mut frames = Frames::new(true, 100, false);
            assert_eq!(frames.scan(&stream), (passing, Some(close)), "{close:?}");
        }
        let mut from_upstream = Frames::new(false, 100, false);
        assert_eq!(
            from_upstream.scan(&client_frame(0x81, b"x")),
            (0, Some((1002, "masked server frame")))
        );
    }

    #[test]
    fn rsv1_passes_on_compressed_message_starts_only_when_deflate_was_agreed() {
        let compressed = [client_frame(0x41, b"abc"), client_frame(0x80, b"def")].concat();
        let mut agreed = Frames::new(true, 100, true);
        assert_eq!(agreed.scan(&compressed), (compressed.len(), None));
        assert_eq!(agreed.messages, 1);
        let mut not_agreed = Frames::new(true, 100, false);
        assert_eq!(
            not_agreed.scan(&compressed),
            (0, Some((1002, "reserved bits set with no extension")))
        );
        for forbidden in [client_frame(0xc9, b""), client_frame(0xa1, b"x")] {
            let mut agreed = Frames::new(true, 100, true);
            assert_eq!(
                agreed.scan(&forbidden).1,
                Some((1002, "reserved bits set with no extension"))
            );
        }
        let continued = [client_frame(0x01, b"abc"), client_frame(0xc0, b"def")].concat();
        let mut agreed = Frames::new(true, 100, true);
        assert_eq!(
            agreed.scan(&continued),
            (9, Some((1002, "reserved bits set with no extension")))
        );
    }

    #[test]
    fn close_frames_towards_the_upstream_are_masked() {
        let plain = close_frame((1009, "too big"), None);
        assert_eq!(&plain[..4], &[0x88, 9, 0x03, 0xf1]);
        let masked = close_frame((1009, "too big"), Some([1, 2, 3, 4]));
        assert_eq!(&masked[..6], &[0x88, 0x89, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, plain[2..]);
    }
}
