//! Idle connections: resident memory per open, silent WebSocket connection on the server.

use std::time::Duration;

use serde::Serialize;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::parties::{self, Party};

#[derive(Debug, Serialize)]
pub struct Idle {
    pub party: String,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
}

/// Connections opened at once.
const BATCH: usize = 500;
/// Loopback source addresses share the connections, so no one of them runs out of ports.
const PER_SOURCE: usize = 20_000;
/// Each run takes fresh source addresses: the last run's ports linger in TIME_WAIT.
static NEXT_SOURCE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

pub async fn run(name: &str, party: &Party, path: &str, count: usize) -> anyhow::Result<Idle> {
    let url = format!("{}{}", party.url.trim_end_matches('/'), path);
    let port: u16 = party.url.trim_end_matches('/').rsplit(':').next().unwrap().parse()?;
    let server = parties::addr(port);
    let first_source = NEXT_SOURCE.fetch_add(count.div_ceil(PER_SOURCE) as u8, std::sync::atomic::Ordering::Relaxed);
    let before = parties::rss_kib(party.pid());
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let batch: Vec<_> = (open.len()..(open.len() + BATCH).min(count))
            .map(|i| {
                let url = url.clone();
                async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    let source = first_source + (i / PER_SOURCE) as u8;
                    socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
                    let stream = socket.connect(server).await?;
                    // Small client buffers: the client's memory is not what is measured.
                    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
                    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
                    anyhow::Ok(ws)
                }
            })
            .collect();
        for ws in futures_util::future::join_all(batch).await {
            open.push(ws?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = parties::rss_kib(party.pid());
    let idle = Idle {
        party: name.to_string(),
        connections: count,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: after.saturating_sub(before) as f64 / count as f64,
    };
    println!(
        "idle {:<24} {} connections: {} KiB -> {} KiB, {:.1} KiB per connection",
        idle.party, count, before, after, idle.kib_per_connection
    );
    drop(open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(idle)
}
