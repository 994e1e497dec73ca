//! The load generator: N WebSocket connections on one thread of their own, each keeping a window
//! of messages in flight to an echoing server. Frames are built once and written in large slices;
//! answers are counted by scanning frame headers in place, never parsed into messages. So the
//! client spends far less per message than any server it loads, and it says when it did not: its
//! own CPU over the measured span is part of the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub connections: usize,
    pub size: usize,
    /// Messages each connection keeps in flight (1: strict ping-pong).
    pub window: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// The process under test, whose CPU over the measured span is read.
    pub server_pid: Option<u32>,
    /// What every message holds.
    pub body: Body,
    /// Offer permessage-deflate and send every message compressed (RSV1 set). The client offers
    /// `client_no_context_takeover`, so one compressed frame serves every message; the server's
    /// compressed answers are counted, not inflated.
    pub deflate: bool,
}

impl Load {
    /// `connections` each keeping `window` text messages of `size` bytes in flight, to a URL
    /// and server the case fills in.
    pub fn new(connections: usize, size: usize, window: usize, warmup: Duration, measure: Duration) -> Load {
        Load {
            url: String::new(),
            connections,
            size,
            window,
            warmup,
            measure,
            server_pid: None,
            body: Body::Filler,
            deflate: false,
        }
    }

    /// Messages in flight per connection, as a pipelining client keeps them: 256 KiB for up to
    /// 16 connections, enough that neither side ever waits for the other; 16 KiB at 256, short
    /// of the server's socket buffers.
    pub fn window_for(connections: usize, size: usize) -> usize {
        let in_flight = if connections < 256 { 256 * 1024 } else { 16 * 1024 };
        (in_flight / size).max(1)
    }
}

/// What every message of a load holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `size` bytes of `x` in a text message: text, as most WebSocket traffic is, so a filter
    /// that acts on text (`tag`) acts on every message.
    Filler,
    /// A text message of `size` bytes cut from a JSON array of quotes, as a market feed sends
    /// (zlib at level 6 makes it about a sixth of its size).
    Json,
}

impl Body {
    /// The message's bytes and its opcode.
    fn message(self, size: usize) -> (Vec<u8>, u8) {
        match self {
            Body::Filler => (vec![b'x'; size], 0x1),
            Body::Json => {
                let mut json = String::from("[");
                for i in 0.. {
                    if json.len() >= size {
                        break;
                    }
                    let side = if i % 3 == 0 { "sell" } else { "buy" };
                    json += &format!(
                        "{{\"symbol\":\"S{}\",\"price\":{:.2},\"size\":{},\"side\":\"{side}\"}},",
                        i % 50,
                        100.0 + (i * 37 % 1000) as f64 * 0.25,
                        (i * 13) % 500
                    );
                }
                json.truncate(size);
                (json.into_bytes(), 0x1)
            }
        }
    }
}

pub struct Outcome {
    /// Messages answered within the measured span.
    pub messages: u64,
    pub sent: u64,
    pub received: u64,
    /// Messages never answered (the connection waited 10 s for them).
    pub lost: u64,
    pub elapsed: Duration,
    /// Round trips, in nanoseconds: each write's messages count with the time its last answer took.
    pub rtt: Histogram<u64>,
    /// CPU time of the client thread over the measured span, in microseconds.
    pub client_cpu_us: u64,
    /// CPU time of the process under test over the measured span, in microseconds.
    pub server_cpu_us: Option<u64>,
    /// Bytes the client wrote and read over the measured span (frames, both ways).
    pub wire_bytes: u64,
}

/// Above this share of its one core the client, not the server, may be what sets the rate.
const CLIENT_BOUND: f64 = 0.9;

impl Outcome {
    /// Answered messages a second over the measured span.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// A round-trip quantile, in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.rtt.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// Bytes on the wire per answered message, both ways.
    pub fn wire_bytes_per_message(&self) -> f64 {
        self.wire_bytes as f64 / self.messages.max(1) as f64
    }

    /// The client's share of its core over the measured span.
    pub fn client_load(&self) -> f64 {
        self.client_cpu_us as f64 / self.elapsed.as_micros().max(1) as f64
    }

    pub fn client_bound(&self) -> bool {
        self.client_load() >= CLIENT_BOUND
    }
}

/// Runs the load on a thread and runtime of its own, so its CPU is its own.
pub async fn run(load: &Load) -> anyhow::Result<Outcome> {
    let load = load.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run_here(&load))
    })
    .await?
}

async fn run_here(load: &Load) -> anyhow::Result<Outcome> {
    let mut streams = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        streams.push(connect(&load.url, load.deflate).await?);
    }
    let frames = Arc::new(FrameBatch::new(load.body, load.size, load.deflate, load.window));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let (frames, measuring, stop) = (frames.clone(), measuring.clone(), stop.clone());
            let window = load.window;
            tokio::spawn(async move { drive(stream, &frames, window, &measuring, &stop).await })
        })
        .collect();
    tokio::time::sleep(load.warmup).await;
    let (client_before, server_before) = (thread_cpu_micros(), load.server_pid.map(crate::parties::cpu_micros));
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(load.measure).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let client_cpu_us = thread_cpu_micros() - client_before;
    let server_cpu_us = load
        .server_pid
        .zip(server_before)
        .map(|(pid, before)| crate::parties::cpu_micros(pid) - before);
    stop.store(true, Ordering::SeqCst);
    let mut outcome = Outcome {
        messages: 0,
        sent: 0,
        received: 0,
        lost: 0,
        elapsed,
        rtt: Histogram::new(3)?,
        client_cpu_us,
        server_cpu_us,
        wire_bytes: 0,
    };
    for task in tasks {
        let totals = task.await??;
        outcome.messages += totals.messages;
        outcome.sent += totals.sent;
        outcome.received += totals.received;
        outcome.lost += totals.lost;
        outcome.wire_bytes += totals.wire_bytes;
        outcome.rtt.add(&totals.rtt)?;
    }
    Ok(outcome)
}

/// Opens a WebSocket connection by hand: the upgrade request, then the raw stream.
async fn connect(url: &str, deflate: bool) -> anyhow::Result<TcpStream> {
    let rest = url.strip_prefix("ws://").context("only ws:// URLs")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    stream.set_nodelay(true)?;
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // The answer is read a byte at a time so not one byte of the first frames is taken with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 8192, "{url}: upgrade answer too long");
        let byte = stream.read_u8().await.with_context(|| format!("{url}: upgrade"))?;
        head.push(byte);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 101"),
        "{url}: {}",
        String::from_utf8_lossy(&head).lines().next().unwrap_or("")
    );
    if deflate {
        // Compressed frames to a server that did not agree would be protocol errors.
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let agreed = head
            .lines()
            .filter_map(|line| line.strip_prefix("sec-websocket-extensions:"))
            .any(agrees_to_deflate);
        anyhow::ensure!(agreed, "{url}: permessage-deflate was offered and not agreed");
    }
    Ok(stream)
}

/// Whether a `Sec-WebSocket-Extensions` answer agrees to permessage-deflate.
pub fn agrees_to_deflate(answer: &str) -> bool {
    answer.trim_start().starts_with(framegate::deflate::NAME)
}

/// `window` + 1 masked frames of one `size`-byte message, back to back: what a connection
/// writes, in slices (a window's worth, after finishing a frame a short write cut).
struct FrameBatch {
    bytes: Vec<u8>,
    frame_len: usize,
}

impl FrameBatch {
    fn new(body: Body, size: usize, deflate: bool, window: usize) -> FrameBatch {
        let (mut payload, opcode) = body.message(size);
        let mut first = 0x80 | opcode;
        if deflate {
            payload = framegate::deflate::Compressor::new(framegate::deflate::Settings {
                window_bits: 15,
                mem_level: 8,
                level: 6,
                no_context_takeover: true,
            })
            .compress(&payload);
            first |= 0x40;
        }
        let size = payload.len();
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match size {
            0..=125 => frame.push(0x80 | size as u8),
            126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(size as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(size as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        FrameBatch {
            frame_len: frame.len(),
            bytes: frame.repeat(window + 1),
        }
    }
}

/// Counts the server's frames in a stream of bytes, carrying a frame cut by a read over to the next.
#[derive(Default)]
struct FrameCounter {
    /// Bytes of the current frame still to come.
    remaining: usize,
    /// The start of a header that a read cut (at most 13 bytes).
    pending: Vec<u8>,
}

impl FrameCounter {
    /// Scans `bytes`; returns how many data frames (text, binary) began in them.
    fn scan(&mut self, mut bytes: &[u8]) -> u64 {
        let mut data_frames = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let earlier = self.pending.len();
            if earlier > 0 {
                self.pending
                    .extend_from_slice(&bytes[..(14 - earlier).min(bytes.len())]);
            }
            let header = if earlier > 0 { &self.pending[..] } else { bytes };
            let Some((header_len, payload_len)) = header_and_payload(header) else {
                if earlier == 0 {
                    self.pending.extend_from_slice(bytes);
                }
                return data_frames;
            };
            if matches!(header[0] & 0x0f, 1 | 2) {
                data_frames += 1;
            }
            // The header's first `earlier` bytes came with an earlier read.
            self.remaining = header_len + payload_len - earlier;
            self.pending.clear();
        }
        data_frames
    }
}

/// The lengths of a server frame's header and payload, if `header` holds the whole header.
fn header_and_payload(header: &[u8]) -> Option<(usize, usize)> {
    let second = *header.get(1)?;
    let masked = if second & 0x80 != 0 { 4 } else { 0 };
    let (len_bytes, payload) = match second & 0x7f {
        126 => (2, u16::from_be_bytes(header.get(2..4)?.try_into().ok()?) as usize),
        127 => (8, u64::from_be_bytes(header.get(2..10)?.try_into().ok()?) as usize),
        short => (0, short as usize),
    };
    let header_len = 2 + len_bytes + masked;
    (header.len() >= header_len).then_some((header_len, payload))
}

/// CPU time of the calling thread, in microseconds.
fn thread_cpu_micros() -> u64 {
    crate::parties::stat_cpu_micros(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

struct Totals {
    messages: u64,
    sent: u64,
    received: u64,
    lost: u64,
    wire_bytes: u64,
    rtt: Histogram<u64>,
}

/// One connection: write whole frames while the window has room, read and count answers.
async fn drive(
    mut stream: TcpStream,
    frames: &FrameBatch,
    window: usize,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<Totals> {
    let mut totals = Totals {
        messages: 0,
        sent: 0,
        received: 0,
        lost: 0,
        wire_bytes: 0,
        rtt: Histogram::new(3)?,
    };
    let mut counter = FrameCounter::default();
    let mut buffer = vec![0u8; 256 * 1024];
    // (messages sent once this write is out, when it began): answers come back in order.
    let mut writes: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    // How far into a frame a short write left off (0: at a frame's start).
    let mut offset = 0usize;
    let mut answered_upto = 0u64;
    let mut last_answer = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let in_flight = (totals.sent - totals.received) as usize;
        // Whole frames to begin now; a frame begun is finished even when stopping.
        let room = if stopping { 0 } else { window - in_flight };
        if room == 0 && offset == 0 && in_flight == 0 {
            break;
        }
        let writing = room > 0 || offset > 0;
        let interest = if writing {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let Ok(ready) = tokio::time::timeout(Duration::from_secs(1), stream.ready(interest)).await else {
            if last_answer.elapsed() > Duration::from_secs(10) {
                totals.lost += in_flight as u64;
                break;
            }
            continue;
        };
        let ready = ready?;
        if writing && ready.is_writable() {
            let frames_to_end = room + usize::from(offset > 0);
            match stream.try_write(&frames.bytes[offset..frames_to_end * frames.frame_len]) {
                Ok(written) => {
                    if measuring.load(Ordering::Relaxed) {
                        totals.wire_bytes += written as u64;
                    }
                    // Frames begun: frame starts passed, the one at `offset` 0 included.
                    let begun = (offset + written).div_ceil(frames.frame_len) - offset.div_ceil(frames.frame_len);
                    offset = (offset + written) % frames.frame_len;
                    if begun > 0 {
                        totals.sent += begun as u64;
                        writes.push_back((totals.sent, Instant::now()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ready.is_readable() {
            match stream.try_read(&mut buffer) {
                Ok(0) => anyhow::bail!("connection closed by the server"),
                Ok(read) => {
                    // One look per read: its bytes and its answers count together or not at all.
                    let measured = measuring.load(Ordering::Relaxed);
                    if measured {
                        totals.wire_bytes += read as u64;
                    }
                    let answers = counter.scan(&buffer[..read]);
                    if answers > 0 {
                        last_answer = Instant::now();
                        totals.received += answers;
                        if measured {
                            totals.messages += answers;
                        }
                        while let Some(&(upto, at)) = writes.front() {
                            if upto > totals.received {
                                break;
                            }
                            writes.pop_front();
                            if measured {
                                totals
                                    .rtt
                                    .record_n(at.elapsed().as_nanos() as u64, upto - answered_upto)?;
                            }
                            answered_upto = upto;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // A close frame (masked, no payload), then the socket goes.
    let _ = stream.write_all(&[0x88, 0x80, 0, 0, 0, 0]).await;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(payload: usize) -> Vec<u8> {
        let mut frame = vec![0x82];
        if payload < 126 {
            frame.push(payload as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(payload as u16).to_be_bytes());
        }
        frame.extend(std::iter::repeat_n(b'x', payload));
        frame
    }

    #[test]
    fn frames_are_counted_whatever_the_reads_cut() {
        let mut stream = Vec::new();
        for size in [0, 5, 125, 126, 300, 4096] {
            stream.extend(server_frame(size));
        }
        stream.extend([0x8a, 0x00]); // a pong is not an answer
        stream.extend(server_frame(1));
        let mut compressed = server_frame(200);
        compressed[0] = 0x80 | 0x40 | 0x1; // RSV1: a compressed text message
        stream.extend(compressed);
        for cut in 1..40 {
            let mut counter = FrameCounter::default();
            let counted: u64 = stream.chunks(cut).map(|chunk| counter.scan(chunk)).sum();
            assert_eq!(counted, 8, "reads of {cut} bytes");
            assert_eq!((counter.remaining, counter.pending.len()), (0, 0));
        }
    }

    #[test]
    fn a_batch_is_whole_masked_frames() {
        let batch = FrameBatch::new(Body::Filler, 300, false, 3);
        assert_eq!(batch.frame_len, 2 + 2 + 4 + 300);
        assert_eq!(batch.bytes.len(), 4 * batch.frame_len);
        assert_eq!(batch.bytes[0], 0x81);
        let mask = &batch.bytes[4..8];
        assert_eq!(batch.bytes[8] ^ mask[0], b'x');
    }

    #[test]
    fn a_json_body_is_text_of_the_size_asked() {
        let (json, opcode) = Body::Json.message(4096);
        assert_eq!((json.len(), opcode), (4096, 0x1));
        assert!(json.starts_with(b"[{\"symbol\":\"S0\",\"price\":100.00,"));
    }

    #[test]
    fn a_compressed_batch_is_rsv1_text_frames_much_smaller_than_the_message() {
        let batch = FrameBatch::new(Body::Json, 4096, true, 1);
        assert_eq!(batch.bytes[0], 0x80 | 0x40 | 0x1);
        let (header, payload) = header_and_payload(&batch.bytes).unwrap();
        assert_eq!(batch.frame_len, header + payload);
        assert!(payload < 4096 / 4, "{payload} bytes");
    }
}
