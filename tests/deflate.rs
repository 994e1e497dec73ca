//! permessage-deflate (RFC 7692) on a route with filters, seen from the wire: raw TCP clients
//! that compress by hand (zlib-rs) check RSV1 frames both ways, offers framegate cannot honour,
//! broken compressed data, a decompression bomb and `min_size`; Python `websockets` and Node `ws`
//! check that real clients negotiate it on /echo and through a relay to a compressing upstream,
//! with RSV1 frames seen on the wire both ways, and get their messages back.

mod common;

use std::net::SocketAddr;

use common::wiretap::Wiretap;
use common::ws_upstream::PythonUpstream;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zlib_rs::{Deflate, DeflateFlush, Inflate, InflateFlush};

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An upgrade to `path` offering `extensions` (none when empty): the open socket and the
/// answer's head, lowercased.
async fn upgrade(addr: SocketAddr, path: &str, extensions: &str) -> (TcpStream, String) {
    let offer = match extensions {
        "" => String::new(),
        offer => format!("Sec-WebSocket-Extensions: {offer}\r\n"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut byte))
            .await
            .expect("no answer in time")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (stream, head)
}

/// The answer's `sec-websocket-extensions`, if any.
fn extension(head: &str) -> Option<&str> {
    head.lines()
        .find_map(|line| line.strip_prefix("sec-websocket-extensions: "))
        .map(str::trim)
}

/// A masked client frame with its first byte as given (FIN, RSV1, opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The next frame from the server: its first byte and payload.
async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        let length = match head[1] & 0x7f {
            126 => u64::from(stream.read_u16().await?),
            127 => stream.read_u64().await?,
            short => u64::from(short),
        };
        let mut payload = vec![0; length as usize];
        stream.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>((head[0], payload))
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("no frame in time")
        .unwrap()
}

/// The close code of the next close frame, skipping pings.
async fn close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let (first, payload) = read_frame(stream).await;
        if first & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// A message compressed as a permessage-deflate client does (window 15, sync flush, no tail).
fn compress(message: &[u8]) -> Vec<u8> {
    let mut deflate = Deflate::new(6, false, 15);
    let mut out = vec![0; message.len() + 1024];
    deflate.compress(message, &mut out, DeflateFlush::SyncFlush).unwrap();
    out.truncate(deflate.total_out() as usize);
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates one message with `inflate`, which keeps the server's window between messages.
fn inflate(inflate: &mut Inflate, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0; 1 << 20];
    let before = inflate.total_out();
    let input = [payload, &TAIL].concat();
    inflate.decompress(&input, &mut out, InflateFlush::SyncFlush).unwrap();
    out.truncate((inflate.total_out() - before) as usize);
    out
}

/// A 4 KiB JSON array, the kind of message a feed sends.
fn json_message() -> Vec<u8> {
    let rows: Vec<String> = (0..200)
        .map(|i| format!("{{\"symbol\":\"S{}\",\"price\":{}.25,\"side\":\"buy\"}}", i % 50, i))
        .collect();
    let mut text = format!("[{}]", rows.join(","));
    text.truncate(4096);
    text.into_bytes()
}

/// A raw DEFLATE stream (fixed Huffman codes) that inflates to `size` zero bytes: one literal
/// 0, then copies of 258 bytes at distance 1, 13 bits each (about 160:1).
fn bomb(size: usize) -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(0b010, 3); // not final, fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..(size - 1) / 258 {
        bits.code(0xc5, 8); // length 258
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    bits.put(0, 3); // the empty stored block the receiver's 00 00 ff ff completes
    bits.bytes
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u8,
}

impl BitWriter {
    /// `count` bits of `value`, least significant first (header fields).
    fn put(&mut self, value: u32, count: u8) {
        for i in 0..count {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// A Huffman code of `count` bits, most significant first.
    fn code(&mut self, code: u32, count: u8) {
        for i in (0..count).rev() {
            self.bit((code >> i) & 1 == 1);
        }
    }

    fn bit(&mut self, set: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if set {
            *self.bytes.last_mut().unwrap() |= 1 << self.used;
        }
        self.used = (self.used + 1) % 8;
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn compressed_frames_flow_both_ways_on_a_filter_route() {
    let proxy = start_default();
    let (mut stream, head) = upgrade(proxy.ws, "/echo", "permessage-deflate; client_max_window_bits").await;
    assert_eq!(extension(&head), Some("permessage-deflate; server_max_window_bits=12"));

    let message = json_message();
    let compressed = compress(&message);
    assert!(compressed.len() < message.len() / 3, "{}", compressed.len());
    let mut window = Inflate::new(false, 15);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        stream.write_all(&client_frame(0xc1, &compressed)).await.unwrap();
        let (first, payload) = read_frame(&mut stream).await;
        assert_eq!(first, 0xc1, "a compressed text frame back (FIN, RSV1, text)");
        assert_eq!(inflate(&mut window, &payload), message);
        sizes.push(payload.len());
    }
    // Each inflated with the window kept from the one before (context takeover).
    assert!(sizes.iter().all(|size| *size < message.len() / 3), "{sizes:?}");
    // /echo compresses every message, however short (`min_size = 0` in the default config).
    stream
        .write_all(&client_frame(0xc1, &compress(b"short")))
        .await
        .unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!((first, inflate(&mut window, &payload)), (0xc1, b"short".to_vec()));
    // An uncompressed message is read too.
    stream.write_all(&client_frame(0x82, &[1, 2, 3])).await.unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!((first, inflate(&mut window, &payload)), (0xc2, vec![1, 2, 3]));

    let series =
        |dir: &str, form: &str| format!("framegate_deflate_bytes_total{{part=\"echo\",dir=\"{dir}\",form=\"{form}\"}}");
    let plain_in = proxy.metric(&series("in", "plain")).await;
    let compressed_in = proxy.metric(&series("in", "compressed")).await;
    let plain_out = proxy.metric(&series("out", "plain")).await;
    let compressed_out = proxy.metric(&series("out", "compressed")).await;
    assert_eq!(plain_in, (3 * message.len() + 5) as f64);
    assert_eq!(compressed_in, (3 * compressed.len() + compress(b"short").len()) as f64);
    assert_eq!(plain_out, (3 * message.len() + 5 + 3) as f64);
    assert!(compressed_out < plain_out / 2.0, "{compressed_out} of {plain_out}");
}

#[tokio::test]
async fn offers_framegate_cannot_honour_still_upgrade_without_the_extension() {
    let proxy = start_default();
    for offer in [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; no_such_parameter",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ] {
        let (mut stream, head) = upgrade(proxy.ws, "/echo", offer).await;
        assert_eq!(extension(&head), None, "{offer}");
        // With nothing agreed, RSV1 is a protocol error.
        stream
            .write_all(&client_frame(0xc1, &compress(b"hello")))
            .await
            .unwrap();
        assert_eq!(close_code(&mut stream).await, 1002, "{offer}");
    }
    // The first offer that can be honoured is taken, after ones that cannot.
    let (_, head) = upgrade(
        proxy.ws,
        "/echo",
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover",
    )
    .await;
    assert_eq!(
        extension(&head),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=12")
    );
}

#[tokio::test]
async fn rsv1_where_rfc_7692_forbids_it_and_broken_data_close_the_connection() {
    let proxy = start_default();
    let cases: [(Vec<u8>, u16); 3] = [
        // RSV1 on a continuation frame.
        (
            [client_frame(0x41, &compress(b"part")), client_frame(0xc0, b"rest")].concat(),
            1002,
        ),
        // RSV1 on a control frame.
        (client_frame(0xc9, b""), 1002),
        // Not DEFLATE at all.
        (client_frame(0xc2, &[0xff; 32]), 1007),
    ];
    for (frames, code) in cases {
        let (mut stream, _) = upgrade(proxy.ws, "/echo", "permessage-deflate").await;
        stream.write_all(&frames).await.unwrap();
        assert_eq!(close_code(&mut stream).await, code);
    }
}

#[tokio::test]
async fn a_decompression_bomb_closes_with_1009_after_inflating_at_most_the_limit() {
    let proxy = start_default();
    // 1 GiB of zeros in a 6.5 MiB frame (DEFLATE cannot pack much more than ~1000:1); /echo's
    // max_message_size is 16 MiB, so the frame itself is within the limit.
    let bomb = bomb(1 << 30);
    let frame = client_frame(0xc2, &bomb);
    let (mut stream, _) = upgrade(proxy.ws, "/echo", "permessage-deflate").await;
    // A message first, so the connection's buffers are made before the baseline.
    stream
        .write_all(&client_frame(0xc1, &compress(&json_message())))
        .await
        .unwrap();
    read_frame(&mut stream).await;
    let before = proxy.rss_kib();
    stream.write_all(&frame).await.unwrap();
    assert_eq!(close_code(&mut stream).await, 1009);
    drop(stream);
    let peak = status_kib(proxy.pid(), "VmHWM:");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = proxy.rss_kib();
    println!(
        "bomb of {} KiB: RSS {before} KiB before, {after} KiB after, peak {peak} KiB",
        bomb.len() >> 10
    );
    // At the peak: the frame as read and at most 16 MiB inflated, far from 1 GiB.
    assert!(peak < before + 64 * 1024, "peak {peak} KiB from {before} KiB");
    assert!(after < before + 8 * 1024, "RSS {after} KiB after, {before} KiB before");
    // The proxy serves on.
    let (mut again, _) = upgrade(proxy.ws, "/echo", "permessage-deflate").await;
    again.write_all(&client_frame(0x81, b"still here")).await.unwrap();
    let (first, payload) = read_frame(&mut again).await;
    let echoed = inflate(&mut Inflate::new(false, 15), &payload);
    assert_eq!((first, echoed), (0xc1, b"still here".to_vec()));
}

#[tokio::test]
async fn python_websockets_and_node_ws_send_and_get_rsv1_frames_on_echo_and_through_the_relay() {
    // /echo compresses every message (`min_size = 0`, as in the default config); /pass relays
    // frames in place to a Python `websockets` echo server, which compresses every message.
    let upstream = PythonUpstream::start(&["--echo"]);
    let config = format!(
        "{}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\" }}]\ndeflate = {{ min_size = 0 }}\n\
         [sinks.echo_upstream]\ntype = \"ws\"\nurl = \"ws://{}/\"\n\
         [routes.pass]\npath = \"/pass\"\nsinks = [\"echo_upstream\"]\n",
        head(""),
        upstream.addr()
    );
    let proxy = Proxy::start(&config, &["echo"], &[]);
    // Each client through a tap of its own, so its frames are seen as they crossed the wire.
    let run = |program: &'static str, script: &'static str, path: &'static str| async move {
        let tap = Wiretap::start(proxy.ws).await;
        let url = format!("ws://{}{path}", tap.addr);
        let lines = tokio::task::spawn_blocking(move || run_client(program, script, vec![url]))
            .await
            .unwrap();
        (lines, tap.data(true), tap.data(false))
    };
    for path in ["/echo", "/pass"] {
        let (python, node) = tokio::join!(
            run("python3", "deflate_client.py", path),
            run("node", "node/deflate_client.js", path)
        );
        for ((lines, up, down), messages) in [(python, 3), (node, 2)] {
            assert!(lines[0].starts_with("permessage-deflate"), "{path}: {lines:?}");
            assert_eq!(lines[1..], vec!["equal"; messages], "{path}");
            // Every message went compressed both ways, each in one frame with RSV1 set.
            assert_eq!((up.len(), down.len()), (messages, messages), "{path}: {up:?} {down:?}");
            assert!(
                up.iter().chain(&down).all(|f| f.rsv1 && f.fin),
                "{path}: {up:?} {down:?}"
            );
            // The 4 KiB JSON message is the first: much smaller on the wire.
            assert!(down[0].length < 1024, "{path}: {down:?}");
        }
    }
    let compressed = proxy
        .metric("framegate_deflate_bytes_total{part=\"echo\",dir=\"in\",form=\"compressed\"}")
        .await;
    assert!(compressed > 0.0);
}

#[tokio::test]
async fn messages_below_min_size_go_out_with_rsv1_clear() {
    let config = format!(
        "{}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\" }}]\ndeflate = {{ min_size = 100 }}\n",
        head("")
    );
    let proxy = Proxy::start(&config, &["echo"], &[]);
    let (mut stream, head) = upgrade(proxy.ws, "/echo", "permessage-deflate; server_no_context_takeover").await;
    assert!(extension(&head).unwrap().contains("server_no_context_takeover"));
    // The client compresses all; framegate only what reaches `min_size`.
    for (size, compressed) in [(99, false), (100, true), (4096, true), (1, false)] {
        let message = "a".repeat(size).into_bytes();
        stream
            .write_all(&client_frame(0xc1, &compress(&message)))
            .await
            .unwrap();
        let (first, payload) = read_frame(&mut stream).await;
        match compressed {
            true => {
                assert_eq!(first, 0xc1, "{size} bytes: FIN, RSV1, text");
                assert!(payload.len() < size, "{size} bytes");
                assert_eq!(inflate(&mut Inflate::new(false, 15), &payload), message);
            }
            false => assert_eq!((first, payload), (0x81, message), "{size} bytes: FIN, text, as it is"),
        }
    }
}
