//! A TCP forwarder between a WebSocket client and its server that reads the frames passing
//! each way (after each side's HTTP head) and keeps their headers: what tests check "on the
//! wire", such as RSV1 on compressed messages, whatever the client or server is.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One frame seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// From the client to the server.
    pub up: bool,
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub length: u64,
}

/// Frames of all connections through the tap, in the order each direction read them.
#[derive(Clone)]
pub struct Wiretap {
    /// Where clients connect to reach the server through the tap.
    pub addr: SocketAddr,
    frames: Arc<Mutex<Vec<Seen>>>,
}

impl Wiretap {
    /// Listens on a port of its own and forwards every connection to `server`.
    pub async fn start(server: SocketAddr) -> Wiretap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = Wiretap {
            addr: listener.local_addr().unwrap(),
            frames: Arc::default(),
        };
        let frames = tap.frames.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(server).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, true, frames.clone()));
                tokio::spawn(forward(server_read, client_write, false, frames.clone()));
            }
        });
        tap
    }

    /// The data frames seen so far one way (`up`: client to server), control frames left out.
    pub fn data(&self, up: bool) -> Vec<Seen> {
        let frames = self.frames.lock().unwrap();
        frames
            .iter()
            .filter(|f| f.up == up && f.opcode < 0x8)
            .copied()
            .collect()
    }
}

/// Copies `from` to `to` as it comes, noting each frame's header after the HTTP head.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    up: bool,
    frames: Arc<Mutex<Vec<Seen>>>,
) {
    let mut pending = Vec::new();
    let mut in_head = true;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        pending.extend_from_slice(&buffer[..read]);
        if in_head {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            pending.drain(..end + 4);
            in_head = false;
        }
        while let Some((seen, size)) = header(&pending, up) {
            if pending.len() < size {
                break;
            }
            frames.lock().unwrap().push(seen);
            pending.drain(..size);
        }
    }
    let _ = to.shutdown().await;
}

/// The header at the start of `bytes` and the whole frame's size, once the header is there.
fn header(bytes: &[u8], up: bool) -> Option<(Seen, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (length, at) = match second & 0x7f {
        126 => (u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().unwrap())), 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap()), 10),
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let seen = Seen {
        up,
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode: first & 0x0f,
        length,
    };
    Some((seen, at + mask + length as usize))
}
