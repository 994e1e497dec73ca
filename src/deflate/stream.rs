//! permessage-deflate on a tokio-tungstenite connection, which knows no extension: `Marked`
//! sits under tungstenite and takes RSV1 off the first frame of each compressed message (a
//! compressed text message is made binary, so its bytes are not checked as UTF-8), noting what
//! it saw; `Deflating` sits above and inflates the messages so noted, and compresses what it
//! sends into frames with RSV1 set. RSV1 anywhere else is left in place for tungstenite to
//! refuse (1002), as RFC 7692 asks. As a client (ws sinks and sources), `Marked` is under the
//! handshake too, so that frames read with the server's 101 are seen; if the server agreed no
//! compression, it stops marking and `Deflating` passes messages as they are.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::codec::{Compressor, InflateError, Inflater, Settings};
use super::negotiate::Agreed;
use crate::config::DeflateConfig;
use crate::metrics::{DeflateCounters, UpstreamCounters};

const RSV1: u8 = 0x40;

/// What ends an HTTP head.
const HEAD_END: &[u8; 4] = b"\r\n\r\n";

/// What the first frame of a data message said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    compressed: bool,
    text: bool,
}

/// Where the reader is in the frame it reads.
#[derive(Debug, Default)]
struct Scan {
    /// Header bytes read of the current frame; 0 at a frame's start or in its payload.
    have: u8,
    /// The header's length, known after its second byte.
    need: u8,
    /// Bytes of the extended payload length (0, 2 or 8).
    extended: u8,
    length: u64,
    payload_left: u64,
}

/// The raw connection under tungstenite, with a note of every data message read.
pub struct Marked<S> {
    inner: S,
    /// A client's: the bytes of `HEAD_END` matched so far, while the server's HTTP answer is
    /// read; `None` once frames come.
    head: Option<u8>,
    /// Whether frames are noted (false: no compression agreed, RSV1 left for tungstenite).
    marking: bool,
    scan: Scan,
    marks: VecDeque<Mark>,
}

impl<S> Marked<S> {
    /// A server's connection, after its upgrade: frames from the first byte.
    pub fn new(inner: S) -> Marked<S> {
        Marked {
            inner,
            head: None,
            marking: true,
            scan: Scan::default(),
            marks: VecDeque::new(),
        }
    }

    /// A client's connection before its handshake: frames after the server's HTTP answer,
    /// noted when framegate offers compression.
    pub fn client(inner: S, offered: bool) -> Marked<S> {
        Marked {
            head: Some(0),
            marking: offered,
            ..Marked::new(inner)
        }
    }

    /// Reads the frame headers in `data` (the bytes just read, in order), changing the first
    /// byte of each compressed message's first frame.
    fn note(&mut self, data: &mut [u8]) {
        if !self.marking {
            return;
        }
        let mut at = 0;
        while let Some(matched) = self.head
            && at < data.len()
        {
            let byte = data[at];
            at += 1;
            let matched = match byte == HEAD_END[usize::from(matched)] {
                true => matched + 1,
                false => u8::from(byte == HEAD_END[0]),
            };
            self.head = (usize::from(matched) < HEAD_END.len()).then_some(matched);
        }
        while at < data.len() {
            let scan = &mut self.scan;
            if scan.payload_left > 0 {
                let passing = scan.payload_left.min((data.len() - at) as u64);
                scan.payload_left -= passing;
                at += passing as usize;
                continue;
            }
            let byte = &mut data[at];
            at += 1;
            match scan.have {
                0 => {
                    let opcode = *byte & 0x0f;
                    if opcode == 0x1 || opcode == 0x2 {
                        let mark = Mark {
                            compressed: *byte & RSV1 != 0,
                            text: opcode == 0x1,
                        };
                        if mark.compressed {
                            *byte = (*byte & !RSV1 & 0xf0) | 0x2;
                        }
                        self.marks.push_back(mark);
                    }
                }
                1 => {
                    let short = *byte & 0x7f;
                    scan.extended = match short {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    scan.length = if scan.extended == 0 { u64::from(short) } else { 0 };
                    scan.need = 2 + scan.extended + if *byte & 0x80 != 0 { 4 } else { 0 };
                }
                n if n < 2 + scan.extended => scan.length = (scan.length << 8) | u64::from(*byte),
                _ => {} // the mask
            }
            scan.have += 1;
            if scan.have >= 2 && scan.have == scan.need {
                scan.payload_left = scan.length;
                scan.have = 0;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Marked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.note(&mut buf.filled_mut()[start..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Marked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a connection with permessage-deflate compresses and how large a message may be.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub agreed: Agreed,
    pub mem_level: u8,
    pub level: u8,
    /// Smaller messages go out as they are.
    pub min_size: usize,
    /// The largest message, inflated.
    pub max_message_size: usize,
}

/// The room tungstenite must allow a compressed message: DEFLATE makes incompressible data a
/// little larger (5 bytes per stored block of up to 64 KiB), and the limit is on the inflated size.
pub fn compressed_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_add(max_message_size / 1024 + 64)
}

impl Options {
    /// What `config` says beside what was `agreed`.
    pub fn new(agreed: Agreed, config: &DeflateConfig, max_message_size: usize) -> Options {
        Options {
            agreed,
            mem_level: config.mem_level,
            level: config.level,
            min_size: config.min_size,
            max_message_size,
        }
    }
}

/// One direction's DEFLATE state each way, made from what was agreed.
struct Codec {
    compressor: Compressor,
    inflater: Inflater,
    min_size: usize,
}

impl Codec {
    fn new(options: &Options) -> Codec {
        let Agreed {
            own_window,
            own_no_context_takeover,
            peer_window,
            peer_no_context_takeover,
        } = options.agreed;
        Codec {
            compressor: Compressor::new(Settings {
                window_bits: own_window,
                mem_level: options.mem_level,
                level: options.level,
                no_context_takeover: own_no_context_takeover,
            }),
            inflater: Inflater::new(peer_window, peer_no_context_takeover),
            min_size: options.min_size,
        }
    }
}

/// A WebSocket connection with permessage-deflate: plain messages in and out.
pub struct Deflating<S> {
    ws: WebSocketStream<Marked<S>>,
    /// `None`: a client's connection whose server agreed no compression.
    codec: Option<Codec>,
    max_message_size: usize,
    /// Compressed messages.
    counters: DeflateCounters,
    /// Every data message, on a client's connection (a route counts its clients' messages).
    traffic: Option<DeflateCounters>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Deflating<S> {
    /// A server's connection with compression agreed. `ws` must have been made over `Marked`
    /// with room for `compressed_limit`.
    pub fn new(ws: WebSocketStream<Marked<S>>, options: Options, counters: DeflateCounters) -> Deflating<S> {
        Deflating {
            ws,
            codec: Some(Codec::new(&options)),
            max_message_size: options.max_message_size,
            counters,
            traffic: None,
        }
    }

    /// A client's connection (over `Marked::client`, room for `compressed_limit`) after the
    /// server's answer: compressing with `options` if it agreed.
    pub fn client(
        mut ws: WebSocketStream<Marked<S>>,
        options: Option<Options>,
        max_message_size: usize,
        counters: UpstreamCounters,
    ) -> Deflating<S> {
        if options.is_none() {
            // Messages already read (with the 101) keep their marks: RSV1 on one fails it.
            ws.get_mut().marking = false;
        }
        Deflating {
            ws,
            codec: options.as_ref().map(Codec::new),
            max_message_size,
            counters: counters.compressed,
            traffic: Some(counters.traffic),
        }
    }

    /// A data message as tungstenite read it, made plain again.
    fn unpack(&mut self, message: Message) -> Result<Message, WsError> {
        let (payload, text) = match message {
            Message::Text(text) => (Bytes::from(text), true),
            Message::Binary(payload) => (payload, false),
            other => return Ok(other),
        };
        let mark = self.ws.get_mut().marks.pop_front();
        let wire = payload.len();
        let too_big = || {
            WsError::Capacity(tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong {
                size: usize::MAX,
                max_size: self.max_message_size,
            })
        };
        let (payload, text) = match (mark, &mut self.codec) {
            (Some(Mark { compressed: true, .. }), None) => {
                return Err(WsError::Protocol(ProtocolError::NonZeroReservedBits));
            }
            (Some(Mark { compressed: true, text }), Some(codec)) => {
                let inflated = codec
                    .inflater
                    .inflate(&payload, self.max_message_size)
                    .map_err(|e| match e {
                        InflateError::TooBig(_) => too_big(),
                        InflateError::Invalid => WsError::Io(io::Error::new(io::ErrorKind::InvalidData, e)),
                    })?;
                self.counters.read(payload.len(), inflated.len());
                (Bytes::from(inflated), text)
            }
            _ if payload.len() > self.max_message_size => return Err(too_big()),
            _ => (payload, text),
        };
        if let Some(traffic) = &self.traffic {
            traffic.read(wire, payload.len());
        }
        Ok(match text {
            true => Message::Text(Utf8Bytes::try_from(payload).map_err(|e| WsError::Utf8(e.to_string()))?),
            false => Message::Binary(payload),
        })
    }

    /// A message to send, compressed when it is data of at least `min_size` bytes.
    fn pack(&mut self, message: Message) -> Message {
        let size = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(payload) => payload.len(),
            _ => return message,
        };
        let Some(codec) = self.codec.as_mut().filter(|codec| size >= codec.min_size) else {
            if let Some(traffic) = &self.traffic {
                traffic.written(size, size);
            }
            return message;
        };
        let opcode = if message.is_text() { Data::Text } else { Data::Binary };
        let payload = message.into_data();
        let compressed = codec.compressor.compress(&payload);
        self.counters.written(payload.len(), compressed.len());
        if let Some(traffic) = &self.traffic {
            traffic.written(payload.len(), compressed.len());
        }
        let mut frame = Frame::message(compressed, OpCode::Data(opcode), true);
        frame.header_mut().rsv1 = true;
        Message::Frame(frame)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Deflating<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let read = ready!(this.ws.poll_next_unpin(cx));
        Poll::Ready(read.map(|read| read.and_then(|message| this.unpack(message))))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Deflating<S> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().ws.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        let message = this.pack(message);
        this.ws.start_send_unpin(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().ws.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().ws.poll_close_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked() -> Marked<tokio::io::Empty> {
        Marked::new(tokio::io::empty())
    }

    #[test]
    fn rsv1_comes_off_the_first_frame_of_compressed_messages_only() {
        // A compressed text frame (masked), a ping, an uncompressed binary message in two
        // frames, and a continuation with RSV1 set (left for tungstenite to refuse).
        let mut stream = vec![0xc1, 0x83, 1, 2, 3, 4, 9, 9, 9];
        stream.extend([0x89, 0x80, 1, 2, 3, 4]);
        stream.extend([0x02, 0x7e, 0x01, 0x00]);
        stream.extend([0u8; 256]);
        stream.extend([0xc0, 0x01, 7]);
        let mut whole = marked();
        let mut noted = stream.clone();
        whole.note(&mut noted);
        assert_eq!(noted[0], 0x82);
        assert_eq!(&noted[1..], &stream[1..]);
        assert_eq!(
            whole.marks,
            [
                Mark {
                    compressed: true,
                    text: true
                },
                Mark {
                    compressed: false,
                    text: false
                }
            ]
        );
        // Read a byte at a time, the same.
        let mut bytewise = marked();
        let mut noted_bytewise = stream.clone();
        for byte in noted_bytewise.chunks_mut(1) {
            bytewise.note(byte);
        }
        assert_eq!(noted_bytewise, noted);
        assert_eq!(bytewise.marks, whole.marks);
        assert_eq!(bytewise.scan.payload_left, 0);
    }

    #[test]
    fn a_client_notes_frames_after_the_server_s_answer_only() {
        // The 101's head (its own CRs and LFs first), then a compressed text frame from the
        // server (unmasked) in the same read, or split anywhere.
        let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let head = stream.len();
        stream.extend([0xc1, 0x02, 0xc1, 0xc1, 0x81, 0x00]);
        for split in [0, 1, head - 2, head, head + 1, stream.len()] {
            let mut client = Marked::client(tokio::io::empty(), true);
            let mut noted = stream.clone();
            let (first, rest) = noted.split_at_mut(split);
            client.note(first);
            client.note(rest);
            assert_eq!(&noted[..head], &stream[..head], "split at {split}");
            assert_eq!(noted[head], 0x82, "split at {split}");
            assert_eq!(client.marks.len(), 2, "split at {split}");
        }
        // Nothing offered: nothing noted, RSV1 stays for tungstenite to refuse.
        let mut client = Marked::client(tokio::io::empty(), false);
        let mut noted = stream.clone();
        client.note(&mut noted);
        assert_eq!((noted, client.marks.len()), (stream, 0));
    }

    #[test]
    fn long_payload_lengths_are_skipped_whole() {
        let mut stream = vec![0xc2, 0x7f];
        stream.extend(70_000u64.to_be_bytes());
        stream.extend(vec![0x81; 70_000]);
        stream.extend([0x81, 0x00]);
        let mut marked = marked();
        marked.note(&mut stream);
        assert_eq!(stream[0], 0x82);
        assert_eq!(marked.marks.len(), 2);
        assert!(!marked.marks[1].compressed && marked.marks[1].text);
    }
}
