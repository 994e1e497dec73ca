//! Idle connections: resident memory per open, silent WebSocket connection on the server.
//!
//! No process may hold more than 20,000 open files here (`ulimit -Hn`), so both sides are
//! sharded. `run` starts one server process per `PER_PROCESS` connections (started for this case
//! only, stopped after) and, for each, one `idle-client` child of this program that opens the
//! shard's connections and holds them until its stdin closes (`hold`). The figure is the RSS
//! growth of all shards together over all connections.

use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_EXTENSIONS;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::parties::{self, Party};

#[derive(Debug, Serialize)]
pub struct Idle {
    pub party: String,
    pub connections: usize,
    /// Server processes the connections were spread over.
    pub processes: usize,
    /// Resident memory of all the processes together, before and with the connections open.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
}

/// Connections one process holds at most (server shard or client), leaving files for the rest.
const PER_PROCESS: usize = 16_000;
/// Connections opened at once.
const BATCH: usize = 500;
/// Loopback source addresses share the connections, so no one of them runs out of ports
/// (32768-60999 to one server).
const PER_SOURCE: usize = 20_000;
/// Each client takes fresh source addresses: the last run's ports linger in TIME_WAIT.
static NEXT_SOURCE: AtomicU8 = AtomicU8::new(2);

/// Opens `count` idle connections to `path` on shards made by `start` and measures them; with
/// `deflate`, each agrees permessage-deflate first.
pub async fn run(
    name: &str,
    start: impl Fn() -> anyhow::Result<Party>,
    path: &str,
    count: usize,
    deflate: bool,
) -> anyhow::Result<Idle> {
    let processes = count.div_ceil(PER_PROCESS).max(1);
    let shards = (0..processes).map(|_| start()).collect::<anyhow::Result<Vec<_>>>()?;
    let rss = || shards.iter().map(|shard| parties::rss_kib(shard.pid())).sum::<u64>();
    let before = rss();
    let mut clients = Vec::with_capacity(processes);
    for (i, shard) in shards.iter().enumerate() {
        let share = count / processes + usize::from(i < count % processes);
        let url = format!("{}{}", shard.url.trim_end_matches('/'), path);
        clients.push(spawn_client(&url, share, deflate)?);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut line = String::new();
        BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .await?;
        if line.trim() != "open" {
            anyhow::bail!("idle client {i} failed: {}", client.wait().await?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    for mut client in clients {
        drop(client.stdin.take());
        client.wait().await?;
    }
    let idle = Idle {
        party: name.to_string(),
        connections: count,
        processes,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_connection: after.saturating_sub(before) as f64 / count as f64,
    };
    println!(
        "idle {:<24} {} connections over {} process{}: {} KiB -> {} KiB, {:.1} KiB per connection",
        idle.party,
        count,
        processes,
        if processes == 1 { "" } else { "es" },
        before,
        after,
        idle.kib_per_connection
    );
    Ok(idle)
}

/// Starts an `idle-client` child for `count` connections to `url`, on fresh source addresses.
fn spawn_client(url: &str, count: usize, deflate: bool) -> anyhow::Result<Child> {
    let first_source = NEXT_SOURCE.fetch_add(count.div_ceil(PER_SOURCE) as u8, Ordering::Relaxed);
    Command::new(std::env::current_exe()?)
        .args(["idle-client", "--url", url])
        .args([
            "--count",
            &count.to_string(),
            "--first-source",
            &first_source.to_string(),
        ])
        .args(deflate.then_some("--deflate"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting an idle client")
}

/// The `idle-client` subcommand: opens `count` connections to `url` from 127.0.0.`first_source`
/// on, prints "open", and holds them until stdin closes. With `deflate`, each offers
/// permessage-deflate and fails unless the server agrees (idle, nothing is ever compressed).
pub async fn hold(url: &str, count: usize, first_source: u8, deflate: bool) -> anyhow::Result<()> {
    let uri: Uri = url.parse()?;
    let server = parties::addr(uri.port_u16().context("the url names no port")?);
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let batch: Vec<_> = (open.len()..(open.len() + BATCH).min(count))
            .map(|i| async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                let source = first_source + (i / PER_SOURCE) as u8;
                socket.bind(std::net::SocketAddr::from(([127, 0, 0, source], 0)))?;
                let stream = socket.connect(server).await?;
                // Small client buffers: the client's memory is not what is measured.
                let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
                let mut request = url.into_client_request()?;
                if deflate {
                    request
                        .headers_mut()
                        .insert(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("permessage-deflate"));
                }
                let (ws, answer) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
                let agreed = (answer.headers().get(SEC_WEBSOCKET_EXTENSIONS))
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(crate::load::agrees_to_deflate);
                anyhow::ensure!(
                    agreed == deflate,
                    "permessage-deflate offered: {deflate}, agreed: {agreed}"
                );
                anyhow::Ok(ws)
            })
            .collect();
        for ws in futures_util::future::join_all(batch).await {
            open.push(ws?);
        }
    }
    println!("open");
    tokio::io::stdin().read_to_end(&mut Vec::new()).await?;
    Ok(())
}
